//! The payment service against the real broker and database: each test has its own database
//! and vhost (see `helpers`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod callbacks;
mod delivery;
mod endpoint;
mod faults;
mod helpers;
mod refunds;
mod sigkill;
