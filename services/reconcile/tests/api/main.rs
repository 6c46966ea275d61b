//! The reconcile service against the real broker and database: each test has its own
//! database and vhost, and moves the consumer's clock instead of waiting for windows (see
//! `helpers`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod helpers;
mod http;
mod join;
mod many;
mod sigkill;
