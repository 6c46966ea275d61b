//! `POST /payments/callback`: the gateway's callbacks, verified and stored once per
//! `callback_id`, and published as `payment.callback` through the outbox in the same
//! transaction. Errors in the order API's shape: `{"error": code, "message", "field"}`.
//!
//! | answer | when |
//! | --- | --- |
//! | 200 `{"callback_id", "known_order", "duplicate"}` | stored and published, or a duplicate (nothing new published) |
//! | 401 `unauthorized` | the signature header is missing, malformed or does not match the body |
//! | 422 `validation_failed` | the body is not JSON or a field is missing or invalid (`field` names it) |
//! | 503 `unavailable` | the database is away, or no `GATEWAY_CALLBACK_SECRET` is set |

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use contracts::event_type::PAYMENT_CALLBACK;
use contracts::{GatewayOutcome, PaymentCallback};
use msgkit::clock::Clock;
use msgkit::http::Problem;
use msgkit::outbox::{self, OutboxMessage};
use serde_json::json;
use sqlx::PgPool;

use crate::callbacks::CallbackBody;
use crate::metrics::PaymentMetrics;
use crate::signature::{CallbackKey, SIGNATURE_HEADER, SignatureError};

/// Largest callback body accepted.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Longest callback id or charge id accepted.
const MAX_ID_LEN: usize = 128;

/// What the routes need.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The service's database.
    pub pool: PgPool,
    /// The gateway's secret; `None`: every callback is refused (503).
    pub key: Option<CallbackKey>,
    /// When a callback is received, by this clock.
    pub clock: Clock,
    /// What the endpoint counts into.
    pub metrics: PaymentMetrics,
}

/// The payment service's own routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/payments/callback", post(callback))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The signature did not verify (401).
    #[error("{0}")]
    Unauthorized(SignatureError),
    /// A field is missing or invalid, or the body is not JSON (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's name, `body` for the whole body.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No secret to verify with (503).
    #[error("no GATEWAY_CALLBACK_SECRET is configured; callbacks cannot be verified")]
    NotConfigured,
    /// The database failed; nothing was stored (503 when it is away, else 500).
    #[error("the service is temporarily unavailable; retry later")]
    Database(#[from] sqlx::Error),
    /// The outbox write failed.
    #[error("internal error")]
    Outbox(#[from] msgkit::outbox::OutboxError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let problem = match &self {
            Self::Unauthorized(_) => Problem::unauthorized("HMAC-SHA256", &message),
            Self::Invalid { field, reason } => Problem::invalid(field, reason),
            // A missing setting: retrying does not help until it is configured.
            Self::NotConfigured => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message)
                    .not_retryable()
            }
            Self::Database(error) => Problem::database(error),
            Self::Outbox(msgkit::outbox::OutboxError::Database(error)) => Problem::database(error),
            Self::Outbox(error) => Problem::internal(error),
        };
        problem.into_response()
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parse a verified body, naming the first missing or invalid field.
fn parse(body: &[u8]) -> Result<CallbackBody, ApiError> {
    let raw: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| invalid("body", format!("is not valid JSON: {error}")))?;
    if !raw.is_object() {
        return Err(invalid("body", "must be a JSON object"));
    }
    let parsed: CallbackBody = serde_path_to_error::deserialize(&raw).map_err(|error| {
        let message = error.inner().to_string();
        // serde names a missing field in its message, not its path.
        let field = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map_or_else(|| error.path().to_string(), str::to_owned);
        invalid(field, message)
    })?;
    let id_ok = |id: &str| !id.is_empty() && id.len() <= MAX_ID_LEN && id.is_ascii();
    if !id_ok(&parsed.callback_id) {
        return Err(invalid(
            "callback_id",
            format!("must be 1 to {MAX_ID_LEN} ASCII characters"),
        ));
    }
    if parsed.charge_id.as_deref().is_some_and(|id| !id_ok(id)) {
        return Err(invalid(
            "charge_id",
            format!("must be 1 to {MAX_ID_LEN} ASCII characters"),
        ));
    }
    if parsed.amount_cents < 0 {
        return Err(invalid("amount_cents", "must not be negative"));
    }
    Ok(parsed)
}

/// Verify, store once, publish once.
#[tracing::instrument(skip_all, fields(callback_id, order_id))]
async fn callback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = state.key.as_ref().ok_or(ApiError::NotConfigured)?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|value| value.to_str().unwrap_or_default());
    key.verify(signature, &body).map_err(|error| {
        state.metrics.received("unauthorized");
        ApiError::Unauthorized(error)
    })?;
    let body = parse(&body).inspect_err(|_| state.metrics.received("invalid"))?;
    let span = tracing::Span::current();
    span.record("callback_id", body.callback_id.as_str());
    span.record("order_id", tracing::field::display(body.order_id));

    let mut tx = state.pool.begin().await?;
    let known_order: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments WHERE order_id = $1)")
            .bind(body.order_id)
            .fetch_one(&mut *tx)
            .await?;
    let event = PaymentCallback {
        callback_id: body.callback_id,
        order_id: body.order_id,
        charge_id: body.charge_id,
        outcome: body.outcome,
        amount_cents: body.amount_cents,
        known_order,
        received_at: state.clock.now(),
    };
    let inserted = sqlx::query(
        "INSERT INTO payment_callbacks \
         (callback_id, order_id, charge_id, outcome, amount_cents, known_order, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (callback_id) DO NOTHING",
    )
    .bind(&event.callback_id)
    .bind(event.order_id)
    .bind(&event.charge_id)
    .bind(match event.outcome {
        GatewayOutcome::Success => "success",
        GatewayOutcome::Declined => "declined",
    })
    .bind(event.amount_cents)
    .bind(event.known_order)
    .bind(event.received_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        // The gateway sent it again: answer as before, publish nothing.
        let known: bool =
            sqlx::query_scalar("SELECT known_order FROM payment_callbacks WHERE callback_id = $1")
                .bind(&event.callback_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.rollback().await?;
        state.metrics.received("duplicate");
        tracing::info!("duplicate gateway callback; already stored");
        return Ok(answer(&event.callback_id, known, true));
    }
    let message = OutboxMessage::of(PAYMENT_CALLBACK, event.order_id.to_string(), &event)
        .map_err(msgkit::outbox::OutboxError::from)?;
    outbox::enqueue(&mut tx, &message).await?;
    tx.commit().await?;
    state.metrics.received("stored");
    if !known_order {
        tracing::warn!("gateway callback for an order payment does not know; recorded");
    } else {
        tracing::info!("gateway callback recorded");
    }
    Ok(answer(&event.callback_id, known_order, false))
}

fn answer(callback_id: &str, known_order: bool, duplicate: bool) -> Response {
    (
        StatusCode::OK,
        Json(json!({
            "callback_id": callback_id,
            "known_order": known_order,
            "duplicate": duplicate,
        })),
    )
        .into_response()
}
