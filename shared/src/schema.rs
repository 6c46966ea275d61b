//! The kit's tables (outbox, inbox), installed in a service's own schema.

use sqlx::PgPool;

/// Install or upgrade the kit's tables in the pool's current schema (idempotent, safe to run
/// from several replicas at once). The kit's migrations are tracked in their own table
/// (`_msgkit_migrations`) so they never clash with the service's own.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_msgkit_migrations");
    migrator.run(pool).await
}
