//! The notify service: tells the customer once when an order reaches its final state.

pub mod handlers;
pub mod startup;
