//! The risk service against the real broker and database: each test has its own database
//! and vhost (see `helpers`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod access;
mod alerts;
mod duplicates;
mod helpers;
mod page;
mod payments;
mod reconciliation;
mod rules;
mod semantics;
mod settings;
mod sigkill;
mod sse;
mod stream;
mod stream_logs;
mod stream_support;
mod transactions;
mod twenty_rules;
