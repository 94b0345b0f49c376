//! The tally daemon as a library: everything `tallyd` does, callable from tests.

pub mod domain;
pub mod store;
