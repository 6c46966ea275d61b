//! `POST /transactions`: a user's transaction, validated once here, stored and published as
//! `transaction.recorded` in one database transaction (the outbox).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use contracts::TransactionRecorded;
use contracts::event_type::TRANSACTION_RECORDED;
use msgkit::outbox::{self, OutboxMessage};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, BODY_LIMIT, InvalidField};

/// Longest id, user id or location accepted.
const MAX_TEXT_LEN: usize = 128;

/// The body as sent; unknown fields are refused (a misspelt field is a client bug).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRequest {
    transaction_id: String,
    user_id: String,
    amount: String,
    currency: String,
    location: String,
    occurred_at: String,
}

/// A transaction that passed validation: only [`NewTransaction::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransaction(TransactionRecorded);

impl NewTransaction {
    /// Validates a request body (a JSON object), naming the first invalid field.
    pub fn parse(raw: &Value) -> Result<Self, InvalidField> {
        if !raw.is_object() {
            return Err(InvalidField::new("body", "must be a JSON object"));
        }
        let request: RecordRequest = serde_path_to_error::deserialize(raw)
            .map_err(|error| InvalidField::from_serde(&error))?;
        Ok(Self(TransactionRecorded {
            transaction_id: text("transaction_id", &request.transaction_id)?,
            user_id: text("user_id", &request.user_id)?,
            amount_cents: amount_cents(&request.amount)?,
            currency: currency(&request.currency)?,
            location: text("location", &request.location)?,
            occurred_at: DateTime::parse_from_rfc3339(request.occurred_at.trim())
                .map_err(|e| {
                    InvalidField::new("occurred_at", format!("must be an RFC 3339 time: {e}"))
                })?
                .with_timezone(&Utc)
                // PostgreSQL keeps microseconds: a repeat of the request must compare equal
                // to what was stored.
                .trunc_subsecs(6),
        }))
    }

    /// The event this transaction is published as.
    pub fn event(&self) -> &TransactionRecorded {
        &self.0
    }
}

fn text(field: &str, value: &str) -> Result<String, InvalidField> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > MAX_TEXT_LEN {
        return Err(InvalidField::new(
            field,
            format!("must be at most {MAX_TEXT_LEN} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// `"12000.00"` -> 1200000. Exactly two decimal places, so an amount is never rounded.
fn amount_cents(amount: &str) -> Result<i64, InvalidField> {
    let invalid = || {
        InvalidField::new(
            "amount",
            "must be a non-negative decimal with exactly 2 places, e.g. \"12000.00\"",
        )
    };
    let (units, cents) = amount.split_once('.').ok_or_else(invalid)?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(units) || cents.len() != 2 || !digits(cents) {
        return Err(invalid());
    }
    let units: i64 = units.parse().map_err(|_| invalid())?;
    let cents: i64 = cents.parse().map_err(|_| invalid())?;
    units
        .checked_mul(100)
        .and_then(|total| total.checked_add(cents))
        .ok_or_else(|| InvalidField::new("amount", "is too large"))
}

fn currency(code: &str) -> Result<String, InvalidField> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err(InvalidField::new(
            "currency",
            "must be 3 upper-case letters (ISO 4217), e.g. \"CNY\"",
        ))
    }
}

/// Record a transaction: 202 when new, 200 when the same transaction was recorded before
/// (nothing is published again), 409 when its id was recorded with other content.
#[tracing::instrument(skip_all, fields(transaction_id))]
pub async fn record(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| ApiError::MalformedJson(rejection.body_text()))?;
    if body.len() > BODY_LIMIT {
        return Err(ApiError::MalformedJson(format!(
            "request body is larger than {BODY_LIMIT} bytes"
        )));
    }
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("body is not valid JSON: {e}")))?;
    let transaction = NewTransaction::parse(&raw).map_err(ApiError::Invalid)?;
    let event = transaction.event();
    tracing::Span::current().record("transaction_id", event.transaction_id.as_str());
    let message = OutboxMessage::of(TRANSACTION_RECORDED, event.user_id.clone(), event)
        .map_err(|e| ApiError::Internal(e.into()))?;

    let mut tx = state.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO transactions (transaction_id, user_id, amount_cents, currency, location, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (transaction_id) DO NOTHING",
    )
    .bind(&event.transaction_id)
    .bind(&event.user_id)
    .bind(event.amount_cents)
    .bind(&event.currency)
    .bind(&event.location)
    .bind(event.occurred_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        let stored = stored(&mut tx, &event.transaction_id).await?;
        tx.rollback().await?;
        return if stored.as_ref() == Some(event) {
            Ok(answer(StatusCode::OK, event))
        } else {
            Err(ApiError::Conflict(event.transaction_id.clone()))
        };
    }
    outbox::enqueue(&mut tx, &message).await?;
    tx.commit().await?;
    tracing::info!(message_id = %message.id(), "transaction recorded");
    Ok(answer(StatusCode::ACCEPTED, event))
}

/// The transaction stored under `id`, as its event.
async fn stored(
    conn: &mut sqlx::PgConnection,
    id: &str,
) -> Result<Option<TransactionRecorded>, sqlx::Error> {
    let row: Option<(String, String, i64, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT transaction_id, user_id, amount_cents, currency, location, occurred_at \
         FROM transactions WHERE transaction_id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(transaction_id, user_id, amount_cents, currency, location, occurred_at)| {
            TransactionRecorded {
                transaction_id,
                user_id,
                amount_cents,
                currency,
                location,
                occurred_at,
            }
        },
    ))
}

fn answer(status: StatusCode, event: &TransactionRecorded) -> Response {
    let body = json!({"transaction_id": event.transaction_id, "status": "recorded"});
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(amount: &str) -> Value {
        json!({
            "transaction_id": "t-1", "user_id": "u-1", "amount": amount, "currency": "CNY",
            "location": "Shanghai", "occurred_at": "2026-11-30T12:00:00Z",
        })
    }

    #[test]
    fn amounts_need_exactly_two_decimal_places() {
        let cents = |amount: &str| NewTransaction::parse(&body(amount)).map(|t| t.0.amount_cents);
        assert_eq!(cents("12000.00"), Ok(1_200_000));
        assert_eq!(cents("0.05"), Ok(5));
        for bad in [
            "12.5",
            "12",
            "-1.00",
            "1.000",
            ".50",
            "1e3.00",
            "99999999999999999.99",
        ] {
            let error = cents(bad).expect_err(bad);
            assert_eq!(error.field, "amount", "{bad}");
        }
    }

    #[test]
    fn each_invalid_field_is_named() {
        let mut raw = body("1.00");
        raw["currency"] = json!("cny");
        assert_eq!(NewTransaction::parse(&raw).unwrap_err().field, "currency");
        let mut raw = body("1.00");
        raw["occurred_at"] = json!("yesterday");
        assert_eq!(
            NewTransaction::parse(&raw).unwrap_err().field,
            "occurred_at"
        );
        let mut raw = body("1.00");
        raw.as_object_mut().map(|o| o.remove("location"));
        assert_eq!(NewTransaction::parse(&raw).unwrap_err().field, "location");
        let mut raw = body("1.00");
        raw["amount"] = json!(12.5);
        assert_eq!(NewTransaction::parse(&raw).unwrap_err().field, "amount");
    }
}
