//! MongoDB access: the one shared client.

pub mod mongo;

pub use mongo::Mongo;
