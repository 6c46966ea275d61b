//! The inventory service: reserves all lines of an order or none, and releases a reservation
//! when its payment fails. Its API shows stock availability, live (`GET /stock/stream`).

pub mod handlers;
pub mod http;
pub mod metrics;
pub mod startup;
pub mod stock;
pub mod stock_feed;
