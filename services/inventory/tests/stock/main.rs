//! The stock API: `GET /stock/{sku}` and the live stream, against the real database and broker.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod api;
mod helpers;
mod sse;
