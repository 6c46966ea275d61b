//! [`Service::with_admission`]: the admission guard of a service's API, its probe a task the
//! service owns; [`Service::rate_limit`]: its per-client rate limit.

use std::future::Future;

use sqlx::PgPool;

use super::{Service, ServiceError};
use crate::admission::{Admission, AdmissionConfig, Backlog};
use crate::config::ConfigError;
use crate::rate_limit::{RateLimit, RateLimitConfig};

impl Service {
    /// Guard routes with admission control (see [`crate::admission`]): `probe` reads the
    /// service's backlog from its database every interval, in a task the service owns;
    /// `defaults` (the service's own limits, e.g. [`AdmissionConfig::default`]) are overridden
    /// by the settings' `<NAME>_ADMISSION_*`, else `ADMISSION_*`. `/readyz` reports the
    /// decision and `/metrics` its series. The returned guard goes to the routes to protect.
    /// Once per service.
    pub fn with_admission<P, Fut>(
        mut self,
        defaults: AdmissionConfig,
        probe: P,
    ) -> Result<(Self, Admission), ServiceError>
    where
        P: Fn(PgPool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Backlog, sqlx::Error>> + Send + 'static,
    {
        if self.ops.has_admission() {
            return Err(ServiceError::AdmissionTwice);
        }
        let config = defaults.configured(&self.settings.source.scoped(&self.settings.name))?;
        let admission =
            Admission::new(config, self.metrics.register_admission(&self.settings.name));
        self.ops = self.ops.with_admission(admission.clone());
        let (task, pool) = (admission.clone(), self.pool.clone());
        self.tasks.push(Box::new(move |shutdown| {
            Box::pin(task.run(pool, probe, shutdown))
        }));
        Ok((self, admission))
    }

    /// The per-client rate limit of this service's open endpoints, when its settings give one
    /// (`<NAME>_RATE_LIMIT_PER_SEC`, else `RATE_LIMIT_PER_SEC`; see [`crate::rate_limit`]),
    /// counting what it refuses in `msgkit_rate_limited_total{service}`. Guard the routes with
    /// `route_layer(axum::middleware::from_fn_with_state(limit, msgkit::rate_limit::guard))`.
    pub fn rate_limit(&self) -> Result<Option<RateLimit>, ConfigError> {
        let config =
            RateLimitConfig::from_config(&self.settings.source.scoped(&self.settings.name))?;
        Ok(config.map(|config| {
            RateLimit::new(config).counting(self.metrics.register_rate_limit(&self.settings.name))
        }))
    }
}
