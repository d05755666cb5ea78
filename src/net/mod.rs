//! The shared network stack: bounded HTTP/1.x over TCP or TLS.
//!
//! `net` turns bytes into requests and responses under limits it is handed.
//! It reads no config, names no role and decides no policy: it runs the one
//! accept loop (`accept`) over a table of connection slots (`slots`), and the admission rules, routes, error bodies and
//! identity checks it applies are handed in by the caller.

pub mod accept;
pub mod client;
pub mod http;
pub mod limits;
pub mod ratelimit;
pub mod server;
pub mod slots;
pub mod tls;
