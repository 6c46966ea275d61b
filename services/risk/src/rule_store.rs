//! The stored rules, as the engine runs them: the current version of every enabled rule,
//! each compiled once per (id, version).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::{ActiveRule, CompiledRule, Kind, RuleId, RuleSpec, RuleVersion, Severity, compile};

/// A rule as stored: one version of it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredRule {
    /// The rule's id.
    pub id: RuleId,
    /// This version.
    pub version: RuleVersion,
    /// The event field it partitions by.
    pub key: String,
    /// What it looks for: the engine's [`Kind`] as JSON.
    pub kind: serde_json::Value,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// Whether it runs.
    pub enabled: bool,
    /// When this version was written.
    pub created_at: DateTime<Utc>,
}

/// Why a stored rule cannot run.
#[derive(Debug, thiserror::Error)]
pub enum StoredRuleError {
    /// The stored JSON is not a rule the engine knows.
    #[error("rule {id} version {version} does not decode: {source}")]
    Undecodable {
        /// The rule.
        id: RuleId,
        /// Its version.
        version: RuleVersion,
        /// Why.
        source: serde_json::Error,
    },
    /// The rule decodes but does not compile.
    #[error("rule {id} version {version} does not compile: {source}")]
    Invalid {
        /// The rule.
        id: RuleId,
        /// Its version.
        version: RuleVersion,
        /// Why.
        source: crate::RuleError,
    },
}

impl StoredRuleError {
    /// The rule that cannot run.
    pub fn rule_id(&self) -> RuleId {
        match self {
            Self::Undecodable { id, .. } | Self::Invalid { id, .. } => *id,
        }
    }
}

impl StoredRule {
    /// The engine's spec of this version.
    pub fn spec(&self) -> Result<RuleSpec, StoredRuleError> {
        let undecodable = |source| StoredRuleError::Undecodable {
            id: self.id,
            version: self.version,
            source,
        };
        let kind: Kind = serde_json::from_value(self.kind.clone()).map_err(undecodable)?;
        let severity: Severity =
            serde_json::from_value(serde_json::Value::String(self.severity.clone()))
                .map_err(undecodable)?;
        Ok(RuleSpec {
            key: self.key.clone(),
            kind,
            severity,
        })
    }
}

/// A stored rule version with the number of alerts raised under it: what `GET /rules` lists,
/// so that a page shows each rule's count without reading every alert.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RuleWithAlerts {
    /// The version.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub rule: StoredRule,
    /// Alerts stored under this version.
    pub alerts: i64,
}

/// Every version of every rule with its alert count, by id then version.
pub async fn all_with_alert_counts(
    conn: &mut PgConnection,
) -> Result<Vec<RuleWithAlerts>, sqlx::Error> {
    // The alerts' unique (rule_id, rule_version, transaction_ids) index serves the grouping.
    sqlx::query_as(
        "SELECT r.id, r.version, r.key, r.kind, r.severity, r.enabled, r.created_at, \
             coalesce(a.alerts, 0) AS alerts \
         FROM rules r LEFT JOIN ( \
             SELECT rule_id, rule_version, count(*) AS alerts FROM alerts \
             GROUP BY rule_id, rule_version \
         ) a ON a.rule_id = r.id AND a.rule_version = r.version \
         ORDER BY r.id, r.version",
    )
    .fetch_all(conn)
    .await
}

/// The versions the engine runs, of every rule whose current (highest) version is enabled
/// (disabling the current version disables the rule): the current version, which starts
/// matches, and each older version superseded after `superseded_after`, so that partial
/// matches started under it can still finish under it (the engine drops those of versions it
/// is not given).
async fn runnable(
    conn: &mut PgConnection,
    superseded_after: DateTime<Utc>,
) -> Result<Vec<StoredRule>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, version, key, kind, severity, enabled, created_at FROM ( \
             SELECT *, \
                 lead(created_at) OVER (PARTITION BY id ORDER BY version) AS superseded_at, \
                 first_value(enabled) OVER (PARTITION BY id ORDER BY version DESC) AS rule_enabled \
             FROM rules \
         ) AS versions \
         WHERE rule_enabled AND (superseded_at IS NULL OR superseded_at > $1) \
         ORDER BY id, version",
    )
    .bind(superseded_after)
    .fetch_all(conn)
    .await
}

/// Serialises writers of `rules`: a new id or version is the highest one plus one. Rule edits
/// are rare; the engine's readers are not blocked (a share-row-exclusive lock allows reads).
async fn lock_for_write(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("LOCK TABLE rules IN SHARE ROW EXCLUSIVE MODE")
        .execute(conn)
        .await
        .map(drop)
}

/// A severity as stored and published.
pub(crate) fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

/// Store `spec` (already compiled, so valid) as version 1 of a new, enabled rule. Call in a
/// transaction.
pub async fn create(conn: &mut PgConnection, spec: &RuleSpec) -> Result<StoredRule, sqlx::Error> {
    lock_for_write(conn).await?;
    let kind = serde_json::to_value(&spec.kind).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query_as(
        "INSERT INTO rules (id, version, key, kind, severity) \
         SELECT coalesce(max(id), 0) + 1, 1, $1, $2, $3 FROM rules \
         RETURNING id, version, key, kind, severity, enabled, created_at",
    )
    .bind(&spec.key)
    .bind(kind)
    .bind(severity_name(spec.severity))
    .fetch_one(conn)
    .await
}

/// Store `spec` as the next version of rule `id`, enabled as its current version is; `None`
/// for an unknown id. Call in a transaction.
pub async fn new_version(
    conn: &mut PgConnection,
    id: RuleId,
    spec: &RuleSpec,
) -> Result<Option<StoredRule>, sqlx::Error> {
    lock_for_write(&mut *conn).await?;
    let kind = serde_json::to_value(&spec.kind).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query_as(
        "INSERT INTO rules (id, version, key, kind, severity, enabled) \
         SELECT id, version + 1, $2, $3, $4, enabled FROM rules \
         WHERE id = $1 ORDER BY version DESC LIMIT 1 \
         RETURNING id, version, key, kind, severity, enabled, created_at",
    )
    .bind(id)
    .bind(&spec.key)
    .bind(kind)
    .bind(severity_name(spec.severity))
    .fetch_optional(conn)
    .await
}

/// Enable or disable rule `id` (its current version); `None` for an unknown id.
pub async fn set_enabled(
    conn: &mut PgConnection,
    id: RuleId,
    enabled: bool,
) -> Result<Option<StoredRule>, sqlx::Error> {
    lock_for_write(&mut *conn).await?;
    sqlx::query_as(
        "UPDATE rules SET enabled = $2 \
         WHERE (id, version) = (SELECT id, max(version) FROM rules WHERE id = $1 GROUP BY id) \
         RETURNING id, version, key, kind, severity, enabled, created_at",
    )
    .bind(id)
    .bind(enabled)
    .fetch_optional(conn)
    .await
}

/// Compiled rules by (id, version): a version never changes once written, so it compiles
/// once per process (CEL parsing runs on a thread of its own and is not free).
#[derive(Debug, Default)]
pub struct CompiledRules {
    cache: Mutex<HashMap<(RuleId, RuleVersion), Arc<CompiledRule>>>,
}

impl CompiledRules {
    /// The rules to run now, compiled: every enabled rule's current version, and its older
    /// versions superseded after `superseded_after` (the longest a partial match can wait:
    /// now minus the longest window and the lateness). A stored rule that does not compile is
    /// left out and returned in the errors, so the others still run.
    pub async fn active(
        &self,
        conn: &mut PgConnection,
        superseded_after: DateTime<Utc>,
    ) -> Result<(Vec<ActiveRule>, Vec<StoredRuleError>), sqlx::Error> {
        let stored = runnable(conn, superseded_after).await?;
        let mut rules = Vec::with_capacity(stored.len());
        let mut errors = Vec::new();
        for rule in stored {
            match self.compiled(&rule) {
                Ok(compiled) => rules.push(ActiveRule {
                    id: rule.id,
                    version: rule.version,
                    compiled,
                }),
                Err(error) => errors.push(error),
            }
        }
        Ok((rules, errors))
    }

    fn compiled(&self, rule: &StoredRule) -> Result<Arc<CompiledRule>, StoredRuleError> {
        let key = (rule.id, rule.version);
        if let Some(compiled) = self.lock().get(&key) {
            return Ok(Arc::clone(compiled));
        }
        // Compiled outside the lock: two handlers may both compile a new version once, which
        // is cheaper than making every handler wait behind one compilation.
        let compiled = compile(&rule.spec()?).map_err(|source| StoredRuleError::Invalid {
            id: rule.id,
            version: rule.version,
            source,
        })?;
        let compiled = Arc::new(compiled);
        self.lock().insert(key, Arc::clone(&compiled));
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(RuleId, RuleVersion), Arc<CompiledRule>>> {
        // A panic while holding the lock leaves a map that is still valid: keep using it.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::Severity;

    /// The migration writes the default rule as a SQL literal; it must be what the engine
    /// calls the default rule.
    #[test]
    fn the_migrations_default_rule_is_the_engines_default_rule() {
        let sql = include_str!("../migrations/20260101000500_risk.sql");
        let values = sql
            .lines()
            .find(|line| line.trim_start().starts_with("(1, 1, "))
            .unwrap();
        let quoted: Vec<&str> = values.split('\'').collect();
        let (key, kind, severity) = (quoted[1], quoted[3], quoted[5]);
        let stored = serde_json::json!({
            "key": key,
            "kind": serde_json::from_str::<serde_json::Value>(kind).unwrap(),
            "severity": severity,
        });
        assert_eq!(stored, serde_json::to_value(crate::default_rule()).unwrap());
    }

    #[test]
    fn severities_are_stored_as_the_engine_serialises_them() {
        for severity in [Severity::Low, Severity::Medium, Severity::High] {
            assert_eq!(
                serde_json::to_value(severity).unwrap(),
                super::severity_name(severity)
            );
        }
    }
}
