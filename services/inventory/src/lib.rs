//! The inventory service: reserves all lines of an order or none, and releases a reservation
//! when its payment fails.

pub mod handlers;
pub mod startup;
pub mod stock;
