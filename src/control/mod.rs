//! Dispatcher-host services shared by `ced` and `ctrl-exec-api`: the agent
//! registry, the fan-out engine, `host:script` locks and the run store.
//!
//! Neither the CLI nor the API owns these; both build on them, so the two
//! front ends behave identically on the wire and on disk.

pub mod auth;
pub mod engine;
pub mod locks;
pub mod ops;
pub mod registry;
pub mod runstore;
