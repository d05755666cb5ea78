//! The inbound side: bind, TLS handshake under a deadline, peer certificate.
//!
//! The accept loop itself is in `accept`; the work a listener spawns per
//! connection uses these helpers so every listener bounds its handshake the
//! same way.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use rustls::ServerConfig;
use smol::Async;

use crate::net::tls;
use crate::rt;

/// A TLS server stream over an async TCP socket.
pub type ServerStream = TlsStream<Async<TcpStream>>;

/// Binds a listener; `port` 0 picks a free port (read it back with
/// [`local_addr`]).
pub fn bind(host: &str, port: u16) -> io::Result<Async<TcpListener>> {
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bind address '{host}' is not an IP address"),
            )
        })?;
    Async::<TcpListener>::bind(SocketAddr::new(ip, port))
}

/// The address a listener actually bound.
pub fn local_addr(listener: &Async<TcpListener>) -> io::Result<SocketAddr> {
    listener.get_ref().local_addr()
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer closed (or reset) the connection without sending a byte:
    /// a port check or a health probe, not a TLS failure.
    Closed,
    /// The peer sent nothing before the deadline.
    Silent,
    /// The peer began but did not finish within the deadline.
    TimedOut,
    /// TLS failed: bad or missing certificate, protocol error, peer hung up.
    Failed(String),
}

impl HandshakeError {
    /// Whether the peer sent bytes that failed as TLS (what a probe rule
    /// counts); closing, staying silent or stalling do not.
    pub fn is_tls_failure(&self) -> bool {
        matches!(self, HandshakeError::Failed(_))
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Closed => write!(f, "closed before sending a byte"),
            HandshakeError::Silent => write!(f, "sent nothing before the handshake deadline"),
            HandshakeError::TimedOut => write!(f, "handshake timed out"),
            HandshakeError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Runs the server side of a TLS handshake, bounded by `timeout` from now
/// (futures-rustls has no deadline of its own). A peer that closes or
/// stays silent before its first byte is told apart from a failed
/// handshake.
pub async fn handshake(
    config: Arc<ServerConfig>,
    tcp: Async<TcpStream>,
    timeout: Duration,
) -> Result<ServerStream, HandshakeError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut first = [0u8; 1];
    match rt::deadline(deadline, tcp.peek(&mut first)).await {
        Err(_) => return Err(HandshakeError::Silent),
        Ok(Ok(0)) | Ok(Err(_)) => return Err(HandshakeError::Closed),
        Ok(Ok(_)) => {}
    }
    let acceptor = TlsAcceptor::from(config);
    match rt::deadline(deadline, acceptor.accept(tcp)).await {
        Err(_) => Err(HandshakeError::TimedOut),
        Ok(Err(e)) => Err(HandshakeError::Failed(
            e.get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .map(|t| t.to_string())
                .unwrap_or_else(|| e.to_string()),
        )),
        Ok(Ok(s)) => tls::resumed_session_valid(s.get_ref().1, crate::time::now())
            .map(|()| s)
            .map_err(HandshakeError::Failed),
    }
}

/// The DER of the client's end-entity certificate, if it sent one.
pub fn peer_certificate(stream: &ServerStream) -> Option<Vec<u8>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

/// Maps an IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`) to its IPv4 address.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
