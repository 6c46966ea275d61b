//! placeholder docs
#![warn(missing_docs)]

pub mod engine;

pub use engine::*;
