//! Dispatcher-host services shared by `ced` and `ctrl-exec-api`: the one
//! dispatch path, the agent registry, the fan-out engine, `host:script`
//! locks and the run store.
//!
//! Neither the CLI nor the API owns these; both call [`dispatch::Dispatch`],
//! so the two front ends behave identically on the wire and on disk.

pub mod auth;
pub mod dispatch;
pub mod engine;
pub mod locks;
pub mod registry;
pub mod renew;
pub mod revoked;
pub mod rotation;
pub mod runstore;
