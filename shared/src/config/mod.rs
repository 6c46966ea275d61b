//! Settings, read once at start-up from an optional TOML file overlaid by the environment.
//! Every setting has a local default so `make run` needs no set-up.
//!
//! A service reads one [`ConfigSource`] ([`ConfigSource::load`]) and builds all of its typed
//! settings from it: the same names in the file and in the environment, the environment
//! winning. In the file, nested tables join their keys with `_`, so
//!
//! ```toml
//! database_url = "postgres://app@db/shop"
//! [consumer]
//! prefetch = 64          # CONSUMER_PREFETCH, every queue of the process
//! [notify.consumer]
//! batch = 32             # NOTIFY_CONSUMER_BATCH, the notify queue only
//! ```
//!
//! A consumer's settings are looked up with its queue's prefix first (`NOTIFY_CONSUMER_BATCH`,
//! `NOTIFY_RETRY_MAX_ATTEMPTS`), then without (`CONSUMER_BATCH`), then the service's own
//! default: nothing set means the service's defaults stand.
//!
//! Any setting may instead name a file holding its value, `NAME_FILE` (see [`files`]): how
//! secrets mounted by a container platform reach a service.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

pub mod files;

/// A setting that is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("setting {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// The setting's name.
    pub name: String,
    /// What it held.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Where settings are looked up; the parsing helpers are shared by every source.
pub trait Lookup {
    /// The raw value of `name`, `None` when unset or blank.
    fn get(&self, name: &str) -> Option<&str>;

    /// `name` parsed as `T`, `None` when unset.
    fn parse_opt<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|value| {
                value.trim().parse().map_err(|e: T::Err| ConfigError {
                    name: name.to_owned(),
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// `name` parsed as `T`, or `default` when unset.
    fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    /// A duration in milliseconds, `None` when unset.
    fn millis_opt(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        Ok(self.parse_opt::<u64>(name)?.map(Duration::from_millis))
    }

    /// A duration in milliseconds, or `default` when unset.
    fn millis(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.millis_opt(name)?.unwrap_or(default))
    }

    /// The value as a string, or `default` when unset.
    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }
}

/// Settings as read once: the environment over an optional TOML file. Its `Debug` hides
/// secrets: values of names containing `SECRET`, `PASSWORD` or `TOKEN`, or ending in `_KEY`,
/// are not shown, and URLs (`*_URL`) lose their passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.values.iter().map(|(name, value)| {
            let upper = name.to_ascii_uppercase();
            // A private key (`AMQP_TLS_CLIENT_KEY`) is as secret as a password.
            let value = if ["SECRET", "PASSWORD", "TOKEN"]
                .iter()
                .any(|word| upper.contains(word))
                || upper.ends_with("_KEY")
            {
                "<redacted>".to_owned()
            } else if upper.ends_with("_URL") {
                redact_url(value)
            } else {
                value.clone()
            };
            (name, value)
        });
        f.debug_struct("ConfigSource")
            .field("values", &shown.collect::<BTreeMap<_, _>>())
            .finish()
    }
}

impl ConfigSource {
    /// The environment over the TOML file named by `<SERVICE>_CONFIG_FILE`, else
    /// `MSGKIT_CONFIG_FILE`, when either is set; in both, every `NAME_FILE` read into `NAME`
    /// ([`files`]).
    pub fn load(service: &str) -> Result<Self, ConfigError> {
        Self::from_env().with_files_read()?.with_file_of(service)
    }

    /// Every `NAME_FILE` replaced by `NAME` = the file's content ([`files`]).
    pub fn with_files_read(self) -> Result<Self, ConfigError> {
        Ok(Self {
            values: files::read_files(self.values)?,
        })
    }

    /// `self` (the environment) over the file it names for `service`, if it names one.
    fn with_file_of(self, service: &str) -> Result<Self, ConfigError> {
        let env = self;
        let file_setting = format!("{}_CONFIG_FILE", env_prefix(service));
        let file = [file_setting.as_str(), "MSGKIT_CONFIG_FILE"]
            .into_iter()
            .find_map(|name| env.get(name).map(|path| (name, path.to_owned())));
        let Some((name, path)) = file else {
            return Ok(env);
        };
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError {
            name: name.to_owned(),
            value: path.clone(),
            reason: error.to_string(),
        })?;
        let mut merged = Self::from_toml(&text)
            .map_err(|mut error| {
                error.reason = format!("{path}: {}", error.reason);
                error
            })?
            .with_files_read()?;
        merged.values.extend(env.values);
        Ok(merged)
    }

    /// The process environment only.
    pub fn from_env() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Exactly these settings (tests; a source built by hand).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Settings from a TOML document, nested keys joined with `_` and upper-cased.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| ConfigError {
            name: "config file".to_owned(),
            value: String::new(),
            reason: error.to_string(),
        })?;
        let mut values = BTreeMap::new();
        flatten("", &table, &mut values);
        Ok(Self { values })
    }

    /// Set `name` (a test, or a service deriving one setting from another).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// A view that looks `NAME` up as `<PREFIX>_NAME` first (e.g. a queue's own settings).
    pub fn scoped(&self, prefix: &str) -> Scoped<'_> {
        Scoped {
            source: self,
            prefix: env_prefix(prefix),
        }
    }
}

impl Lookup for ConfigSource {
    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }
}

/// [`ConfigSource::scoped`]: `<PREFIX>_NAME`, else `NAME`.
#[derive(Clone, Debug)]
pub struct Scoped<'a> {
    source: &'a ConfigSource,
    prefix: String,
}

impl Lookup for Scoped<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.source
            .get(&format!("{}_{name}", self.prefix))
            .or_else(|| self.source.get(name))
    }
}

/// `order-events.v2` -> `ORDER_EVENTS_V2`: a name as a settings prefix.
pub fn env_prefix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            env_prefix(key)
        } else {
            format!("{prefix}_{}", env_prefix(key))
        };
        match value {
            toml::Value::Table(inner) => flatten(&name, inner, out),
            toml::Value::String(text) => {
                out.insert(name, text.clone());
            }
            toml::Value::Array(items) => {
                let joined: Vec<String> = items.iter().map(scalar).collect();
                out.insert(name, joined.join(","));
            }
            other => {
                out.insert(name, scalar(other));
            }
        }
    }
}

fn scalar(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The URL with any password replaced by `***`, safe for logs and error messages.
///
/// Works for `amqp://`, `postgres://` and `http://` URLs alike; anything it cannot parse is
/// returned as `<unparseable url>` rather than risk printing a secret.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".to_owned();
    };
    // The authority ends at the first '/', '?' or '#'; userinfo is before its last '@'.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
