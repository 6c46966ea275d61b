//! The rebate service against the real broker and database: each test has its own database
//! and vhost (see `helpers`), and produces events by writing them to the archive stream as the
//! outbox relay does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod balances;
mod helpers;
mod history;
mod replicas;
mod sse;
mod stream;
mod tiers;
