//! What the CLI's tests that run the service binaries share: finding them, and running one
//! with its output kept.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};

pub use msgkit::testing::Running;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A service binary built beside this package's `msgkit` (`make test` builds them first).
pub fn binary(name: &str) -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_msgkit"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        binary.is_file(),
        "{} is missing: cargo build --workspace --bins",
        binary.display()
    );
    binary
}
