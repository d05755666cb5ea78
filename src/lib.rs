//! ctrl-exec: run allowlisted scripts on a fleet of agent hosts over mutual TLS.
//!
//! One library, one multicall binary. The roles (`dispatcher`, `agent`, `api`)
//! each own one module with a `main(args) -> ExitCode` entry point; they never
//! import each other. What two roles need lives in the shared modules:
//! `net` (bounded HTTP/1.x over TLS), `pki`, `conf`, `hook`, `proc`, `launch`, `sandbox`, `log`,
//! `fsx`, `time`, `rt`, and `control` (the dispatcher host's registry, fan-out
//! engine, run store and locks, shared by `ced` and `ctrl-exec-api`).

// Denied, not forbidden: `sandbox` alone allows it, for one audited call.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod conf;
pub mod control;
pub mod dispatcher;
pub mod executor;
pub mod exit;
pub mod fsx;
pub mod hook;
pub mod launch;
pub mod log;
pub mod net;
pub mod out;
pub mod pki;
pub mod proc;
pub mod proto;
pub mod rt;
pub mod sandbox;
#[cfg(test)]
mod testutil;
pub mod time;

/// The version every role reports (`--version`, `/ping`, `/health`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
