//! The faults against real systems: alarms on a RabbitMQ node of the test's own (alarms are
//! node-wide, so never on the shared one), and a paused service against the shared broker.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod alarm;
mod pause;
mod scratch_node;
