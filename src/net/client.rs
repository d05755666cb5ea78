//! The outbound side: resolve, connect, TLS handshake and one request per
//! connection, every step under the caller's deadline.
//!
//! Errors are classified ([`ClientError`]) so callers can word them for
//! users; this module names no role and knows no endpoint.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls::ClientConfig;
use smol::Async;

use crate::net::http::{Conn, HttpError, Response};
use crate::net::limits::Limits;
use crate::net::tls;
use crate::rt;

/// A TLS client stream over an async TCP socket.
pub type ClientStream = TlsStream<Async<TcpStream>>;

/// Why a request to a peer failed, by the phase it failed in.
#[derive(Debug)]
pub enum ClientError {
    /// The name did not resolve.
    Resolve,
    /// The peer actively refused the TCP connection.
    Refused,
    /// No route to the host or network down.
    Unreachable,
    /// The TCP connection did not complete before the deadline.
    ConnectTimeout,
    /// The TLS handshake failed (certificate or trust mismatch, not TLS).
    Tls(String),
    /// Connected, but the exchange did not finish before the deadline.
    ReadTimeout,
    /// The peer's reply was not acceptable HTTP.
    Http(HttpError),
    /// Another I/O error.
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Resolve => write!(f, "name did not resolve"),
            ClientError::Refused => write!(f, "connection refused"),
            ClientError::Unreachable => write!(f, "no route to host"),
            ClientError::ConnectTimeout => write!(f, "connection timed out"),
            ClientError::Tls(e) => write!(f, "tls handshake failed: {e}"),
            ClientError::ReadTimeout => write!(f, "read timed out"),
            ClientError::Http(e) => write!(f, "bad reply: {e}"),
            ClientError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Resolves `host:port`; literal IPs never touch the resolver.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ClientError> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host = host.to_string();
    let addrs = smol::unblock(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
    })
    .await
    .map_err(|_| ClientError::Resolve)?;
    if addrs.is_empty() {
        return Err(ClientError::Resolve);
    }
    Ok(addrs)
}

/// Opens a TCP connection to the first address that answers.
pub async fn connect_tcp(
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<Async<TcpStream>, ClientError> {
    let addrs = rt::deadline(deadline, resolve(host, port))
        .await
        .map_err(|_| ClientError::ConnectTimeout)??;
    let mut last = ClientError::Unreachable;
    for addr in addrs {
        match rt::deadline(deadline, Async::<TcpStream>::connect(addr)).await {
            Err(_) => return Err(ClientError::ConnectTimeout),
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = classify_connect(e),
        }
    }
    Err(last)
}

fn classify_connect(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ClientError::Refused,
        io::ErrorKind::TimedOut => ClientError::ConnectTimeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            ClientError::Unreachable
        }
        _ => ClientError::Io(e),
    }
}

/// Connects and completes a TLS handshake with `config`.
pub async fn connect_tls(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
    deadline: Instant,
) -> Result<ClientStream, ClientError> {
    let tcp = connect_tcp(host, port, deadline).await?;
    let connector = TlsConnector::from(config);
    match rt::deadline(deadline, connector.connect(tls::server_name(host), tcp)).await {
        Err(_) => Err(ClientError::ConnectTimeout),
        Ok(Err(e)) => Err(ClientError::Tls(tls_reason(&e))),
        Ok(Ok(s)) => Ok(s),
    }
}

fn tls_reason(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// Sends one request on an established stream and reads the reply.
pub async fn exchange(
    stream: ClientStream,
    method: &str,
    path: &str,
    host: &str,
    body: Option<&[u8]>,
    limits: &Limits,
    deadline: Instant,
) -> Result<Response, ClientError> {
    let mut conn = Conn::new(stream);
    conn.write_request(method, path, host, body, deadline)
        .await
        .map_err(map_http)?;
    conn.read_response(limits, deadline).await.map_err(map_http)
}

fn map_http(e: HttpError) -> ClientError {
    match e {
        HttpError::TimedOut(_) => ClientError::ReadTimeout,
        HttpError::Io(io) => ClientError::Io(io),
        other => ClientError::Http(other),
    }
}

/// The DER of the peer's end-entity certificate on a client stream.
pub fn peer_certificate(stream: &ClientStream) -> Option<Vec<u8>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}
