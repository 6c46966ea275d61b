//! Reaching a service's schema the way the service does: `DATABASE_URL`, and the schema from
//! `--schema`, else `<SERVICE>_DB_SCHEMA`, else the service's name.

use msgkit::config::{ConfigSource, env_prefix};
use msgkit::database::DatabaseSettings;
use sqlx::PgPool;

use crate::CliError;

/// A pool on `service`'s schema, which must hold the kit's table `table` (so that a wrong
/// service or schema is named as such, not met as a missing relation later).
pub async fn connect(service: &str, schema: Option<&str>, table: &str) -> Result<PgPool, CliError> {
    let mut source = ConfigSource::from_env()
        .with_files_read()
        .map_err(|error| CliError::Usage(error.to_string()))?;
    if let Some(schema) = schema {
        source.set(format!("{}_DB_SCHEMA", env_prefix(service)), schema);
    }
    let settings = DatabaseSettings::from_config(&source, &env_prefix(service), service)
        .map_err(|error| CliError::Usage(error.to_string()))?;
    let pool = settings
        .connect()
        .await
        .map_err(|error| CliError::Unavailable(error.to_string()))?;
    let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&pool)
        .await
        .map_err(|error| CliError::Unavailable(error.to_string()))?;
    if !present {
        return Err(CliError::NotFound(format!(
            "schema {:?} has no {table} table: is {service} a msgkit service that has started?",
            settings.schema
        )));
    }
    Ok(pool)
}
