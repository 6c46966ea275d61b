//! The payment service: charges each reserved order through a payment gateway (a simulator
//! that lives here) and reports the result.

pub mod gateway;
pub mod handlers;
pub mod startup;
