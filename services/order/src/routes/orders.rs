//! `POST /orders`, `GET /orders/{id}` and `POST /orders/{id}/cancel`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use contracts::{OrderCancelRequested, OrderLine, OrderPlaced, event_type};
use msgkit::outbox::{self, OutboxMessage};
use msgkit::trace_context::{TRACEPARENT, TraceParent};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{AppState, BODY_LIMIT};
use crate::domain::{
    CancelOrderRequest, CancelReason, InvalidField, NewOrder, OrderStatus, PlaceOrderRequest,
};
use crate::error::ApiError;
use crate::idempotency::{self, IdempotencyKey, SavedResponse};
use crate::storage;

/// Accept an order: the order row, its history and its `order.placed` outbox row are written in
/// one transaction. The broker is not involved, so orders are accepted while it is away, up to
/// the admission limits (503 + `Retry-After` beyond them).
#[tracing::instrument(skip_all, fields(order_id))]
pub async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit: BODY_LIMIT }
        } else {
            ApiError::MalformedJson(rejection.body_text())
        }
    })?;
    require_json_content_type(&headers)?;
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("body is not valid JSON: {e}")))?;
    let request: PlaceOrderRequest = deserialize(&raw).map_err(ApiError::Invalid)?;
    let order = NewOrder::try_from(&request).map_err(ApiError::Invalid)?;
    let key = IdempotencyKey::from_headers(&headers)?;
    // The request's span continues an incoming traceparent (the kit's HTTP middleware), and
    // the event continues the request.
    let trace = msgkit::telemetry::context::current().unwrap_or_else(TraceParent::new_root);

    if let Some(key) = &key {
        let mut conn = state.pool.acquire().await?;
        if let Some(saved) = idempotency::saved_response(&mut conn, key, &raw).await? {
            return Ok(replay(saved, &trace));
        }
    }
    // Only a new order is shed: a retried request whose order was accepted (above) gets its
    // first answer whatever the backlog, and reads and cancels are never shed.
    state.admission.admit().map_err(ApiError::Overloaded)?;

    let order_id = Uuid::new_v4();
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    let event = OrderPlaced {
        order_id,
        customer_id: order.customer_id.as_str().to_owned(),
        items: order
            .lines
            .iter()
            .map(|line| OrderLine {
                sku: line.sku.as_str().to_owned(),
                quantity: line.quantity.get(),
            })
            .collect(),
        placed_at: Utc::now(),
        location: order
            .location
            .as_ref()
            .map(|location| location.as_str().to_owned()),
    };
    let message = OutboxMessage::of(event_type::ORDER_PLACED, order_id.to_string(), &event)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let response = SavedResponse {
        status: StatusCode::ACCEPTED,
        body: json!({"order_id": order_id, "status": "pending"}),
    };

    let mut tx = state.pool.begin().await?;
    storage::insert_order(
        &mut tx,
        order_id,
        &order,
        event_type::ORDER_PLACED.name(),
        message.id(),
    )
    .await?;
    outbox::enqueue(&mut tx, &message).await?;
    if let Some(key) = &key
        && !idempotency::save_response(&mut tx, key, &raw, &response).await?
    {
        // A concurrent request with the same key committed first: ours never happened.
        tx.rollback().await?;
        let mut conn = state.pool.acquire().await?;
        let saved = idempotency::saved_response(&mut conn, key, &raw)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("idempotency key vanished")))?;
        return Ok(replay(saved, &trace));
    }
    tx.commit().await?;
    tracing::info!(%order_id, message_id = %message.id(), "order accepted");

    let mut http = (response.status, Json(response.body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{order_id}")) {
        http.headers_mut().insert(header::LOCATION, location);
    }
    set_traceparent(&mut http, &trace);
    Ok(http)
}

/// The order, its lines and its history.
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<storage::OrderView>, ApiError> {
    let order_id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    storage::load_order(&state.pool, order_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// A customer cancels a confirmed order: the request is recorded on the order (its history
/// says so; the status stays `confirmed`) and `order.cancel_requested` is enqueued, in one
/// transaction. Payment refunds the charge, then inventory puts the stock back and the order
/// becomes `cancelled` (both on `payment.refunded`). 202 with the order; 409 with the reason
/// when the order cannot be cancelled (not confirmed, or cancelled or requested already).
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn cancel_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<storage::OrderView>), ApiError> {
    let order_id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit: BODY_LIMIT }
        } else {
            ApiError::MalformedJson(rejection.body_text())
        }
    })?;
    // The body is optional: none at all is a cancellation without a reason.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        CancelOrderRequest::default()
    } else {
        require_json_content_type(&headers)?;
        let raw: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::MalformedJson(format!("body is not valid JSON: {e}")))?;
        deserialize(&raw).map_err(ApiError::Invalid)?
    };
    let reason = request
        .reason
        .as_deref()
        .map(|reason| CancelReason::parse(reason, "reason"))
        .transpose()
        .map_err(ApiError::Invalid)?;
    let requested_at = Utc::now();

    let mut tx = state.pool.begin().await?;
    let customer_id = match storage::request_cancellation(
        &mut tx,
        order_id,
        reason.as_ref().map(CancelReason::as_str),
        requested_at,
    )
    .await?
    {
        storage::CancelAttempt::Recorded { customer_id } => customer_id,
        storage::CancelAttempt::Refused(refusal) => {
            tracing::info!(%order_id, %refusal, "cancellation refused");
            return Err(ApiError::NotCancellable(refusal));
        }
        storage::CancelAttempt::NotFound => return Err(ApiError::NotFound),
    };
    let event = OrderCancelRequested {
        order_id,
        customer_id,
        reason: reason.as_ref().map(|reason| reason.as_str().to_owned()),
        requested_at,
    };
    let message = OutboxMessage::of(
        event_type::ORDER_CANCEL_REQUESTED,
        order_id.to_string(),
        &event,
    )
    .map_err(|e| ApiError::Internal(e.into()))?;
    let note = match &reason {
        Some(reason) => format!("cancellation requested: {}", reason.as_str()),
        None => "cancellation requested".to_owned(),
    };
    storage::record_history(
        &mut tx,
        order_id,
        OrderStatus::Confirmed.as_str(),
        event_type::ORDER_CANCEL_REQUESTED.name(),
        Some(&note),
        Some(message.id()),
    )
    .await?;
    outbox::enqueue(&mut tx, &message).await?;
    tx.commit().await?;
    tracing::info!(%order_id, message_id = %message.id(), "cancellation requested");

    let order = storage::load_order(&state.pool, order_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(order)))
}

fn replay(saved: SavedResponse, trace: &TraceParent) -> Response {
    let mut http = (saved.status, Json(saved.body)).into_response();
    http.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    set_traceparent(&mut http, trace);
    http
}

fn set_traceparent(response: &mut Response, trace: &TraceParent) {
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Deserialize with the path of the offending field, so the error names it.
fn deserialize<T: DeserializeOwned>(raw: &Value) -> Result<T, InvalidField> {
    // serde would read a struct from a JSON array, positionally; a request is an object.
    if !raw.is_object() {
        return Err(InvalidField {
            field: "body".to_owned(),
            reason: "must be a JSON object".to_owned(),
        });
    }
    serde_path_to_error::deserialize(raw).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        InvalidField {
            field: field_name(&path, &message),
            reason: message,
        }
    })
}

/// serde reports a missing field against its parent; name the field itself. (An unknown
/// field's path already ends with its name.)
fn field_name(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (parent, named) {
        ("", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        ("", None) => "body".to_owned(),
        (parent, None) => parent.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_errors_name_the_offending_field() {
        assert_eq!(
            field_name(".", "missing field `customer_id`"),
            "customer_id"
        );
        assert_eq!(
            field_name("items[1]", "missing field `sku`"),
            "items[1].sku"
        );
        assert_eq!(
            field_name(
                "coupon",
                "unknown field `coupon`, expected `customer_id` or `items`"
            ),
            "coupon"
        );
        assert_eq!(
            field_name("items[0].quantity", "invalid type: string"),
            "items[0].quantity"
        );
        assert_eq!(
            field_name(".", "invalid type: sequence, expected struct"),
            "body"
        );
    }
}
