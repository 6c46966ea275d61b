//! Settings given as files: `NAME_FILE=/run/secrets/name` stands for `NAME` set to that file's
//! content, the way container platforms (Docker and Kubernetes secrets) hand a process its
//! passwords, keys and token secrets without putting them in its environment, where any child
//! process, crash report or `/proc/<pid>/environ` reader would see them.
//!
//! Every setting can be given this way (`DATABASE_URL_FILE`, `AMQP_URL_FILE`,
//! `RISK_TOKEN_SECRET_FILE`, `AMQP_TLS_CLIENT_KEY_FILE`, ...), except the names of the TOML
//! settings file itself (`*_CONFIG_FILE`). One trailing newline is dropped: files written by
//! `echo` or an editor end with one, and a password never does.

use std::collections::BTreeMap;

use super::ConfigError;

/// The suffix that makes a setting the path of a file holding the value of the name before it.
pub const FILE_SUFFIX: &str = "_FILE";

/// Settings ending so name a settings file, not a value's file.
const CONFIG_FILE_SUFFIX: &str = "_CONFIG_FILE";

/// `values` with every `NAME_FILE` replaced by `NAME` = the file's content. Setting both
/// `NAME` and `NAME_FILE` is an error (which one was meant cannot be known), as is a file that
/// cannot be read; the error names the setting and the path, never what the file holds.
pub(super) fn read_files(
    mut values: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_settings: Vec<(String, String)> = values
        .iter()
        .filter(|(name, path)| {
            name.len() > FILE_SUFFIX.len()
                && name.ends_with(FILE_SUFFIX)
                && !name.ends_with(CONFIG_FILE_SUFFIX)
                && !path.trim().is_empty()
        })
        .map(|(name, path)| (name.clone(), path.clone()))
        .collect();
    for (file_setting, path) in file_settings {
        let name = file_setting[..file_setting.len() - FILE_SUFFIX.len()].to_owned();
        if values
            .get(&name)
            .is_some_and(|value| !value.trim().is_empty())
        {
            return Err(ConfigError {
                name: file_setting,
                value: path,
                reason: format!("{name} is set too; set one of them"),
            });
        }
        let content = std::fs::read_to_string(&path).map_err(|error| ConfigError {
            name: file_setting.clone(),
            value: path.clone(),
            reason: format!("cannot read the file: {error}"),
        })?;
        let content = content
            .strip_suffix('\n')
            .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
            .unwrap_or(&content)
            .to_owned();
        values.remove(&file_setting);
        values.insert(name, content);
    }
    Ok(values)
}
