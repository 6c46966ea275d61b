use super::*;

#[test]
fn debug_hides_secrets_and_url_passwords() {
    let source = ConfigSource::from_pairs([
        ("RISK_TOKEN_SECRET", "the-secret-value-itself"),
        ("DATABASE_URL", "postgres://app:hunter2@db:5432/msgkit"),
        ("RISK_HTTP_ADDR", "127.0.0.1:8084"),
        (
            "AMQP_TLS_CLIENT_KEY",
            "-----BEGIN PRIVATE KEY-----key-material",
        ),
    ]);
    let shown = format!("{source:?}");
    assert!(!shown.contains("the-secret-value-itself"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("key-material"), "{shown}");
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

#[test]
fn a_setting_can_be_read_from_the_file_its_file_setting_names() {
    let dir = std::env::temp_dir().join(format!("msgkit-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("token_secret");
    std::fs::write(&secret, "s3cret-from-a-file-0123456789abcdef\n").unwrap();
    let secret = secret.to_string_lossy().into_owned();
    let source = ConfigSource::from_pairs([
        ("RISK_TOKEN_SECRET_FILE", secret.as_str()),
        ("MSGKIT_CONFIG_FILE", "/not/read/here.toml"),
    ])
    .with_files_read()
    .unwrap();
    assert_eq!(
        source.get("RISK_TOKEN_SECRET"),
        Some("s3cret-from-a-file-0123456789abcdef"),
        "the content, without the file's trailing newline"
    );
    assert_eq!(source.get("RISK_TOKEN_SECRET_FILE"), None);
    assert_eq!(
        source.get("MSGKIT_CONFIG_FILE"),
        Some("/not/read/here.toml"),
        "a settings file's name is not a value's file"
    );

    let both = ConfigSource::from_pairs([
        ("RISK_TOKEN_SECRET_FILE", secret.as_str()),
        ("RISK_TOKEN_SECRET", "another"),
    ])
    .with_files_read()
    .unwrap_err();
    assert_eq!(both.name, "RISK_TOKEN_SECRET_FILE");
    assert!(
        both.reason.contains("RISK_TOKEN_SECRET is set too"),
        "{both}"
    );

    let missing = dir.join("absent");
    let error = ConfigSource::from_pairs([("DATABASE_URL_FILE", missing.to_str().unwrap())])
        .with_files_read()
        .unwrap_err();
    assert_eq!(error.name, "DATABASE_URL_FILE");
    assert!(error.to_string().contains("absent"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_environments_file_setting_wins_over_the_settings_file_and_the_settings_file_may_name_files()
{
    let dir = std::env::temp_dir().join(format!("msgkit-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let from_env = dir.join("env-url");
    std::fs::write(&from_env, "postgres://app:from-env@db/x").unwrap();
    let from_toml = dir.join("toml-secret");
    std::fs::write(&from_toml, "toml-secret-value\r\n").unwrap();
    let toml = dir.join("risk.toml");
    std::fs::write(
        &toml,
        format!(
            "database_url = \"postgres://app:from-toml@db/x\"\ntoken_secret_file = {:?}\n",
            from_toml.to_str().unwrap()
        ),
    )
    .unwrap();
    let loaded = ConfigSource::from_pairs([
        ("RISK_CONFIG_FILE", toml.to_str().unwrap()),
        ("DATABASE_URL_FILE", from_env.to_str().unwrap()),
    ])
    .with_files_read()
    .unwrap()
    .with_file_of("risk")
    .unwrap();
    assert_eq!(
        loaded.get("DATABASE_URL"),
        Some("postgres://app:from-env@db/x")
    );
    assert_eq!(loaded.get("TOKEN_SECRET"), Some("toml-secret-value"));
    std::fs::remove_dir_all(&dir).unwrap();
}
