//! Reading a scenario file: found by name or path, its includes merged under it.

use std::path::{Path, PathBuf};

use super::Scenario;
use crate::CliError;

/// Find and read a scenario: a path, or a name under `chaos/` of the repository.
pub fn load(name_or_path: &str) -> Result<(Scenario, PathBuf), CliError> {
    let candidates = [
        PathBuf::from(name_or_path),
        Path::new("chaos").join(format!("{name_or_path}.toml")),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../chaos")
            .join(format!("{name_or_path}.toml")),
    ];
    let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        CliError::NotFound(format!(
            "no scenario {name_or_path:?} (looked for a file, and chaos/{name_or_path}.toml)"
        ))
    })?;
    let value = read_with_includes(path, 0)?;
    let mut scenario: Scenario = value
        .try_into()
        .map_err(|e| CliError::Usage(format!("scenario {} is invalid: {e}", path.display())))?;
    scenario.apply_overrides();
    scenario
        .validate()
        .map_err(|e| CliError::Usage(format!("scenario {}: {e}", path.display())))?;
    Ok((scenario, path.clone()))
}

/// `path` as TOML, with its includes merged under it.
fn read_with_includes(path: &Path, depth: usize) -> Result<toml::Value, CliError> {
    if depth > 4 {
        return Err(CliError::Usage(format!(
            "{}: includes nest too deep",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::NotFound(format!("cannot read {}: {e}", path.display())))?;
    let own: toml::Value = toml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("scenario {} is invalid: {e}", path.display())))?;
    let includes: Vec<String> = own
        .get("include")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut merged = toml::Value::Table(toml::Table::new());
    for include in includes {
        let included = path.parent().unwrap_or(Path::new(".")).join(include);
        merge(&mut merged, read_with_includes(&included, depth + 1)?);
    }
    merge(&mut merged, own);
    Ok(merged)
}

/// Merge `over` into `base`: tables key by key, arrays appended, anything else replaced.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (toml::Value::Array(base), toml::Value::Array(over)) => base.extend(over),
        (base, over) => *base = over,
    }
}
