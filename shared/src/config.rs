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

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

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
/// secrets: values of names containing `SECRET`, `PASSWORD` or `TOKEN` are not shown, and
/// URLs (`*_URL`) lose their passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.values.iter().map(|(name, value)| {
            let upper = name.to_ascii_uppercase();
            let value = if ["SECRET", "PASSWORD", "TOKEN"]
                .iter()
                .any(|word| upper.contains(word))
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
    /// `MSGKIT_CONFIG_FILE`, when either is set.
    pub fn load(service: &str) -> Result<Self, ConfigError> {
        Self::from_env().with_file_of(service)
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
        let mut merged = Self::from_toml(&text).map_err(|mut error| {
            error.reason = format!("{path}: {}", error.reason);
            error
        })?;
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
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets_and_url_passwords() {
        let source = ConfigSource::from_pairs([
            ("RISK_TOKEN_SECRET", "the-secret-value-itself"),
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/msgkit"),
            ("RISK_HTTP_ADDR", "127.0.0.1:8084"),
        ]);
        let shown = format!("{source:?}");
        assert!(!shown.contains("the-secret-value-itself"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:8084"), "{shown}");
    }

    #[test]
    fn a_toml_file_gives_the_same_names_as_the_environment() {
        let source = ConfigSource::from_toml(
            "database_url = \"postgres://db/x\"\n[consumer]\nprefetch = 64\n[notify.consumer]\nbatch = 32\n[amqp]\nurl = [\"amqp://a\", \"amqp://b\"]\n",
        )
        .unwrap();
        assert_eq!(source.get("DATABASE_URL"), Some("postgres://db/x"));
        assert_eq!(source.get("CONSUMER_PREFETCH"), Some("64"));
        assert_eq!(source.get("NOTIFY_CONSUMER_BATCH"), Some("32"));
        assert_eq!(source.get("AMQP_URL"), Some("amqp://a,amqp://b"));
    }

    #[test]
    fn the_environment_wins_over_the_file_it_names_and_a_bad_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("msgkit-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("notify.toml");
        std::fs::write(&file, "[consumer]\nbatch = 32\nprefetch = 64\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        let env = ConfigSource::from_pairs([
            ("NOTIFY_CONFIG_FILE", path.as_str()),
            ("CONSUMER_BATCH", "8"),
        ]);
        let loaded = env.clone().with_file_of("notify").unwrap();
        assert_eq!(
            loaded.get("CONSUMER_BATCH"),
            Some("8"),
            "the environment wins"
        );
        assert_eq!(
            loaded.get("CONSUMER_PREFETCH"),
            Some("64"),
            "the file fills in"
        );

        let other = ConfigSource::from_pairs([("MSGKIT_CONFIG_FILE", path.as_str())]);
        let loaded = other.with_file_of("payment").unwrap();
        assert_eq!(
            loaded.get("CONSUMER_BATCH"),
            Some("32"),
            "the kit-wide file"
        );

        let missing = ConfigSource::from_pairs([("NOTIFY_CONFIG_FILE", "/nonexistent/x.toml")]);
        let error = missing.with_file_of("notify").unwrap_err();
        assert_eq!(error.name, "NOTIFY_CONFIG_FILE");

        std::fs::write(&file, "consumer = [unclosed").unwrap();
        let error = env.with_file_of("notify").unwrap_err();
        assert!(error.reason.starts_with(&path), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_scoped_lookup_prefers_the_prefixed_name_and_falls_back_to_the_plain_one() {
        let source = ConfigSource::from_pairs([
            ("CONSUMER_BATCH", "4"),
            ("NOTIFY_CONSUMER_BATCH", "2"),
            ("CONSUMER_PREFETCH", " "),
        ]);
        assert_eq!(
            source.scoped("notify").parse("CONSUMER_BATCH", 1).unwrap(),
            2
        );
        assert_eq!(
            source.scoped("order").parse("CONSUMER_BATCH", 1).unwrap(),
            4
        );
        assert_eq!(
            source
                .scoped("order")
                .parse("CONSUMER_PREFETCH", 32)
                .unwrap(),
            32,
            "blank is unset"
        );
        let error = ConfigSource::from_pairs([("CONSUMER_BATCH", "many")])
            .parse("CONSUMER_BATCH", 1usize)
            .unwrap_err();
        assert!(error.to_string().contains("CONSUMER_BATCH"));
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://app:p%40ss@db/orders?sslmode=disable"),
            "postgres://app:***@db/orders?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(redact_url("no scheme"), "<unparseable url>");
    }
}
