//! The faults against real systems: alarms on a RabbitMQ node of the test's own (alarms are
//! node-wide, so never on the shared one), a paused service against the shared broker, a node
//! killed in the three-node cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod alarm;
mod node;
mod pause;
mod scratch_node;
