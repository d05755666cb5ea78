//! The outbound side: resolve, connect, TLS handshake and one request per
//! connection, every step under the caller's deadline.
//!
//! Errors are classified ([`ClientError`]) by what the peer did (refused,
//! closed or reset, stalled, failed TLS trust) so callers can word each for
//! users; details from the TLS library are cleaned of the documentation
//! URLs some of its messages carry. This module names no role and knows no
//! endpoint.

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
    /// The peer accepted the TCP connection, then closed or reset it before
    /// the TLS handshake finished: it refused us after accepting (busy,
    /// rate limit, address filter), or it is not a TLS server.
    HandshakeClosed,
    /// The TLS handshake did not finish before the deadline: the peer is
    /// overloaded or stalled.
    HandshakeTimeout,
    /// The TLS handshake failed on trust: a certificate did not verify, or
    /// the peer refused ours (the reason, cleaned of URLs).
    Tls(String),
    /// Connected, but the exchange did not finish before the deadline.
    ReadTimeout,
    /// The peer closed or reset the connection after the handshake, before
    /// its reply was complete.
    Reset,
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
            ClientError::HandshakeClosed => {
                write!(f, "connection closed before the tls handshake completed")
            }
            ClientError::HandshakeTimeout => write!(f, "tls handshake timed out"),
            ClientError::Tls(e) => write!(f, "tls handshake failed: {e}"),
            ClientError::ReadTimeout => write!(f, "read timed out"),
            ClientError::Reset => write!(f, "connection closed before the reply was complete"),
            ClientError::Http(e) => write!(f, "bad reply: {}", without_urls(&e.to_string())),
            ClientError::Io(e) => write!(f, "{}", without_urls(&e.to_string())),
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
        Err(_) => Err(ClientError::HandshakeTimeout),
        Ok(Err(e)) => Err(classify_handshake(&e)),
        Ok(Ok(s)) => match tls::resumed_session_valid(s.get_ref().1, crate::time::now()) {
            Ok(()) => Ok(s),
            Err(reason) => Err(ClientError::Tls(reason)),
        },
    }
}

/// A failed handshake: a TLS error is a trust failure; the peer closing or
/// resetting the socket is not.
fn classify_handshake(e: &io::Error) -> ClientError {
    if let Some(reason) = tls_error(e) {
        return ClientError::Tls(reason);
    }
    if is_closed(e) {
        return ClientError::HandshakeClosed;
    }
    ClientError::Tls(without_urls(&e.to_string()))
}

/// The TLS library's error inside `e`, worded without URLs.
fn tls_error(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|tls| without_urls(&tls.to_string()))
}

/// Whether `e` means the peer closed or reset the connection.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// `msg` without any `http://` or `https://` link (some TLS library
/// messages point at its manual; an operator needs the words, not the
/// link), and without the separator left before it.
pub fn without_urls(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for word in msg.split(' ') {
        if word.starts_with("https://") || word.starts_with("http://") {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.trim_end_matches([' ', ':', ',', ';']).to_string()
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
        HttpError::Closed => ClientError::Reset,
        // Under TLS 1.3 the server judges our certificate after our side of
        // the handshake is done: its refusal arrives as an alert on read.
        HttpError::Io(io) if tls_error(&io).is_some() => {
            ClientError::Tls(tls_error(&io).unwrap_or_default())
        }
        HttpError::Io(io) if is_closed(&io) => ClientError::Reset,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_dropped_from_library_messages() {
        assert_eq!(
            without_urls(
                "peer closed connection without sending TLS close_notify: \
                 https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof"
            ),
            "peer closed connection without sending TLS close_notify"
        );
        assert_eq!(without_urls("no link here"), "no link here");
    }

    #[test]
    fn handshake_failures_are_told_apart() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert!(matches!(
            classify_handshake(&eof),
            ClientError::HandshakeClosed
        ));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(
            classify_handshake(&reset),
            ClientError::HandshakeClosed
        ));
        let trust = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(classify_handshake(&trust), ClientError::Tls(_)));
    }

    #[test]
    fn a_closed_exchange_is_a_reset_not_an_io_error() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof: https://example.org/x");
        assert!(matches!(map_http(HttpError::Io(eof)), ClientError::Reset));
        assert!(matches!(map_http(HttpError::Closed), ClientError::Reset));
    }
}
