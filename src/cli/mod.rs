//! The helper subcommands, each in its own file, so `main.rs` stays a table of subcommands:
//! `demo` (the whole product in one command), `insert-test` (documents to try the bridge
//! with) and `peek` (messages shown and left in the queue).

pub mod demo;
pub mod insert_test;
pub mod peek;
