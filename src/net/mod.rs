//! The shared network stack: bounded HTTP/1.x over TCP or TLS.
//!
//! `net` turns bytes into requests and responses under limits it is handed.
//! It reads no config, names no role and decides no policy: listeners,
//! routes, error bodies and identity checks belong to the roles.

pub mod client;
pub mod http;
pub mod limits;
pub mod ratelimit;
pub mod server;
pub mod tls;
