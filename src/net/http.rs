//! Bounded HTTP/1.x framing: pure head parsers and a thin connection wrapper.
//!
//! The parsers take bytes and answer complete, incomplete (`Ok(None)`) or an
//! [`HttpError`]; they never touch a socket, so they are tested on slices.
//! [`Conn`] is the socket shell: it appends reads to a buffer capped at
//! [`Limits::max_head_bytes`], parses again, and reads bodies by
//! `Content-Length` only (no chunked coding, so no request smuggling). Every
//! read runs under one deadline per phase and every write under one deadline.
//!
//! Invariants: a declared body larger than the limit is refused before any
//! body byte is read; buffers grow only as bytes arrive; bytes read past the
//! end of one message stay in the [`Conn`] for the next.
//!
//! This module decides no policy: callers map [`HttpError::status`] to a
//! status line and build the error body themselves.

use std::fmt;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::Async;

use crate::net::limits::{Limits, LINGER_BYTES, LINGER_TIMEOUT, READ_CHUNK_BYTES};
use crate::rt;

/// A connection: a stream plus the bytes read from it but not yet consumed.
pub struct Conn<S> {
    /// The underlying stream, for callers that need the peer certificate or
    /// address.
    pub io: S,
    /// Bytes read past the end of the last message.
    /// Invariant: grows only while a head is read, never past that read's
    /// `max_head_bytes`; bodies are read straight into their own buffer.
    buf: Vec<u8>,
}

/// A request read by [`Conn::read_request`].
#[derive(Debug)]
pub struct Request {
    /// The request line and headers.
    pub head: Head,
    /// Exactly `Content-Length` bytes (empty without one).
    pub body: Vec<u8>,
}

/// A response read by [`Conn::read_response`].
#[derive(Debug)]
pub struct Response {
    /// The status code from the status line.
    pub status: u16,
    /// Header names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body: `Content-Length` bytes, or everything up to EOF without one.
    pub body: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method, ASCII upper-case letters only.
    pub method: String,
    /// The request target exactly as sent, query string included.
    pub target: String,
    /// Header names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
}

/// What went wrong reading or writing one message.
#[derive(Debug)]
pub enum HttpError {
    /// The peer sent a blank first line, or closed before sending anything.
    Empty,
    /// The head breaks the grammar; names the part that does.
    Malformed(&'static str),
    /// More header lines than the limit allows.
    TooManyHeaders,
    /// The head did not end within the byte limit.
    HeadTooLarge,
    /// `Content-Length` is repeated, empty, not digits, or too long.
    BadLength,
    /// A feature this layer refuses, e.g. `transfer-encoding`.
    Unsupported(&'static str),
    /// The body is over the limit: the declared length or, without
    /// `Content-Length`, the bytes received when the limit was crossed.
    BodyTooLarge {
        /// Declared (or received) body length in bytes.
        declared: u64,
    },
    /// A phase did not finish before its deadline.
    TimedOut(Phase),
    /// The peer closed the connection in the middle of a message.
    Closed,
    /// The stream failed.
    Io(io::Error),
}

/// The phase of a message exchange, named in timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the start line and headers.
    Head,
    /// Reading the body.
    Body,
    /// Writing a whole message.
    Write,
}

impl<S> Conn<S> {
    /// Wraps a stream with an empty buffer.
    pub fn new(io: S) -> Self {
        Conn {
            io,
            buf: Vec::new(),
        }
    }

    /// Returns the stream; bytes read past the last message are dropped.
    pub fn into_inner(self) -> S {
        self.io
    }
}

/// Reading. `Send` lets the work run in non-generic code over a
/// `dyn AsyncRead`, built once for all stream types.
impl<S: AsyncRead + Unpin + Send> Conn<S> {
    /// Reads one request: the head under one deadline of
    /// `limits.head_timeout`, then exactly `Content-Length` body bytes under
    /// one deadline of `limits.body_timeout`.
    ///
    /// A declared body over `limits.max_body_bytes` is refused before any
    /// body byte is read. EOF before the first byte is [`HttpError::Empty`].
    pub async fn read_request(&mut self, limits: &Limits) -> Result<Request, HttpError> {
        read_request(&mut self.io, &mut self.buf, limits).await
    }

    /// Reads one response, head and body, all before `deadline`.
    ///
    /// The body is `Content-Length` bytes; without that header it runs to EOF,
    /// capped at `limits.max_body_bytes`. Bytes past the body stay buffered,
    /// so a second response on the same connection reads correctly.
    pub async fn read_response(
        &mut self,
        limits: &Limits,
        deadline: Instant,
    ) -> Result<Response, HttpError> {
        read_response(&mut self.io, &mut self.buf, limits, deadline).await
    }
}

impl<S: AsyncWrite + Unpin + Send> Conn<S> {
    /// Writes an HTTP/1.0 response with a JSON body and flushes, before
    /// `deadline`:
    /// `HTTP/1.0 <code> <phrase>`, `Content-Type: application/json`,
    /// `Content-Length: <n>`, blank line, body.
    pub async fn write_response(
        &mut self,
        status: u16,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(), HttpError> {
        self.write_response_with(status, &[], body, deadline).await
    }

    /// [`Conn::write_response`] with extra header lines (`Allow` on a 405,
    /// say); a name or value that would break the framing is refused.
    pub async fn write_response_with(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        deadline: Instant,
    ) -> Result<(), HttpError> {
        let bytes = response_bytes(status, headers, body)?;
        write_all(&mut self.io, &bytes, deadline).await
    }

    /// Writes an HTTP/1.1 request with `Host` and `Connection: close`, plus
    /// `Content-Type: application/json` and `Content-Length` when there is a
    /// body (never chunked), and flushes, before `deadline`.
    ///
    /// Refuses a method, target or host that would break the framing.
    pub async fn write_request(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<(), HttpError> {
        let bytes = request_bytes(method, target, host, body)?;
        write_all(&mut self.io, &bytes, deadline).await
    }

    /// Writes `bytes` exactly as given and flushes, before `deadline`.
    pub async fn write_raw(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), HttpError> {
        write_all(&mut self.io, bytes, deadline).await
    }
}

/// A stream whose sending side can be shut while its receiving side stays
/// open. `close()` on an async TCP stream only flushes, and on a TLS stream
/// it sends `close_notify` but leaves the socket open, so neither tells a
/// peer that reads to EOF that the answer is complete.
pub trait HalfClose {
    /// Sends end-of-stream to the peer (a TCP FIN); reading goes on.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl HalfClose for Async<TcpStream> {
    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(Shutdown::Write)
    }
}

impl<S: HalfClose> HalfClose for futures_rustls::server::TlsStream<S> {
    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().0.shutdown_write()
    }
}

/// Answering and ending a connection.
impl<S: AsyncRead + AsyncWrite + HalfClose + Unpin + Send> Conn<S> {
    /// Writes a response and ends the connection so the peer sees it: the
    /// write side is closed first (TLS `close_notify`, then a TCP FIN), then
    /// whatever the peer still sends is read and discarded until it closes,
    /// for at most [`LINGER_TIMEOUT`] and [`LINGER_BYTES`]. Without this a
    /// peer still sending a body refused with 413 gets a reset instead of
    /// the answer. Every step has its deadline; failures only end it early.
    pub async fn respond_and_close(&mut self, status: u16, body: &[u8], limits: &Limits) {
        self.respond_and_close_with(status, &[], body, limits).await
    }

    /// [`Conn::respond_and_close`] with extra header lines.
    pub async fn respond_and_close_with(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        limits: &Limits,
    ) {
        let deadline = Instant::now() + limits.write_timeout;
        if self
            .write_response_with(status, headers, body, deadline)
            .await
            .is_err()
        {
            return;
        }
        if !matches!(rt::deadline(deadline, self.io.close()).await, Ok(Ok(()))) {
            return;
        }
        if self.io.shutdown_write().is_err() {
            return;
        }
        self.buf = Vec::new();
        let linger = Instant::now() + LINGER_TIMEOUT;
        let mut scratch = [0u8; READ_CHUNK_BYTES];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match rt::deadline(linger, self.io.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

impl Head {
    /// The value of header `name` (case-insensitive); the last one wins.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The target without its `?query`.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }
}

impl HttpError {
    /// The status code to answer this error with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Empty
            | HttpError::Malformed(_)
            | HttpError::BadLength
            | HttpError::Unsupported(_) => 400,
            HttpError::TooManyHeaders | HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::TimedOut(_) => 408,
            HttpError::Closed | HttpError::Io(_) => 400,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Empty => write!(f, "empty request"),
            HttpError::Malformed(what) => write!(f, "malformed {what}"),
            HttpError::TooManyHeaders => write!(f, "too many header lines"),
            HttpError::HeadTooLarge => write!(f, "message head too large"),
            HttpError::BadLength => write!(f, "invalid content-length"),
            HttpError::Unsupported(what) => write!(f, "unsupported {what}"),
            HttpError::BodyTooLarge { declared } => write!(f, "body too large ({declared} bytes)"),
            HttpError::TimedOut(phase) => write!(f, "timed out during {phase}"),
            HttpError::Closed => write!(f, "connection closed mid-message"),
            HttpError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Head => "head",
            Phase::Body => "body",
            Phase::Write => "write",
        })
    }
}

/// The reason phrase written for `code`; clients key on the number only.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((head, consumed)))`: the head
/// ends at `buf[consumed]`. Lines end in CRLF or bare LF. The request line is
/// `METHOD SP TARGET [SP HTTP/1.x]`. A blank first line is
/// [`HttpError::Empty`]; header line `max_headers + 1` is
/// [`HttpError::TooManyHeaders`] as soon as its first byte arrives.
pub fn parse_request_head(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(Head, usize)>, HttpError> {
    let Some((line, mut pos)) = next_line(buf, 0) else {
        return Ok(None);
    };
    if line.is_empty() {
        return Err(HttpError::Empty);
    }
    let (method, target) = parse_request_line(line)?;
    let Some(headers) = parse_headers(buf, &mut pos, max_headers)? else {
        return Ok(None);
    };
    Ok(Some((
        Head {
            method,
            target,
            headers,
        },
        pos,
    )))
}

/// Parses a response head (`HTTP/1.x NNN reason`, then headers) from the
/// start of `buf`: `Ok(Some((status, headers, consumed)))` or `Ok(None)` when
/// incomplete. Header rules are those of [`parse_request_head`].
#[allow(clippy::type_complexity)] // the signature is the documented contract
pub fn parse_response_head(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<(u16, Vec<(String, String)>, usize)>, HttpError> {
    let Some((line, mut pos)) = next_line(buf, 0) else {
        return Ok(None);
    };
    let status = parse_status_line(line)?;
    let Some(headers) = parse_headers(buf, &mut pos, max_headers)? else {
        return Ok(None);
    };
    Ok(Some((status, headers, pos)))
}

/// The body length a head declares, refused before any body byte is read.
///
/// No `Content-Length` is 0. `Transfer-Encoding` in any form is unsupported.
/// A repeated `Content-Length` (even with equal values), an empty one, or one
/// that is not 1 to 19 ASCII digits is [`HttpError::BadLength`]; a value over
/// `max_body` is [`HttpError::BodyTooLarge`].
pub fn body_length(headers: &[(String, String)], max_body: usize) -> Result<usize, HttpError> {
    Ok(content_length(headers, max_body)?.unwrap_or(0))
}

/// Like [`body_length`], but `None` when there is no `Content-Length`.
fn content_length(
    headers: &[(String, String)],
    max_body: usize,
) -> Result<Option<usize>, HttpError> {
    if headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Err(HttpError::Unsupported("transfer-encoding"));
    }
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let Some((_, value)) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HttpError::BadLength);
    }
    // 19 digits always fit in a u64 (max 18 446 744 073 709 551 615), so
    // counting digits first makes the parse below overflow-free.
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadLength);
    }
    let declared: u64 = value.parse().map_err(|_| HttpError::BadLength)?;
    match usize::try_from(declared) {
        Ok(len) if len <= max_body => Ok(Some(len)),
        _ => Err(HttpError::BodyTooLarge { declared }),
    }
}

/// The exact bytes of a response.
fn response_bytes(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<u8>, HttpError> {
    if !(100..=999).contains(&status) {
        return Err(HttpError::Malformed("status code"));
    }
    let mut extra = String::new();
    for (name, value) in headers {
        let clean = |s: &str| !s.is_empty() && !s.bytes().any(|b| b == b'\r' || b == b'\n');
        if !clean(name) || !clean(value) || name.contains(':') {
            return Err(HttpError::Malformed("header"));
        }
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    let head = format!(
        "HTTP/1.0 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
        reason_phrase(status),
        body.len()
    );
    let mut bytes = Vec::with_capacity(head.len() + body.len());
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(body);
    Ok(bytes)
}

/// The exact bytes of a request; refuses parts that would break framing.
fn request_bytes(
    method: &str,
    target: &str,
    host: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, HttpError> {
    if !is_method(method.as_bytes()) {
        return Err(HttpError::Malformed("method"));
    }
    if !is_target(target.as_bytes()) {
        return Err(HttpError::Malformed("request target"));
    }
    if host.is_empty() || !is_target(host.as_bytes()) {
        return Err(HttpError::Malformed("host"));
    }
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    Ok(bytes)
}

/// The request reader behind [`Conn::read_request`], built once.
async fn read_request(
    io: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut Vec<u8>,
    limits: &Limits,
) -> Result<Request, HttpError> {
    let head_deadline = Instant::now() + limits.head_timeout;
    let head = rt::deadline(head_deadline, read_head(io, buf, limits, Start::Request))
        .await
        .map_err(|_| HttpError::TimedOut(Phase::Head))??;
    let Parsed::Request(head) = head else {
        unreachable!("read_head answers the kind of start line it was asked for")
    };
    let len = body_length(&head.headers, limits.max_body_bytes)?;
    let body_deadline = Instant::now() + limits.body_timeout;
    let body = rt::deadline(body_deadline, read_body(io, buf, len))
        .await
        .map_err(|_| HttpError::TimedOut(Phase::Body))??;
    Ok(Request { head, body })
}

/// The response reader behind [`Conn::read_response`], built once.
async fn read_response(
    io: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut Vec<u8>,
    limits: &Limits,
    deadline: Instant,
) -> Result<Response, HttpError> {
    let head = rt::deadline(deadline, read_head(io, buf, limits, Start::Response))
        .await
        .map_err(|_| HttpError::TimedOut(Phase::Head))??;
    let Parsed::Response(status, headers) = head else {
        unreachable!("read_head answers the kind of start line it was asked for")
    };
    let len = content_length(&headers, limits.max_body_bytes)?;
    let body = match len {
        Some(len) => rt::deadline(deadline, read_body(io, buf, len)).await,
        None => rt::deadline(deadline, read_to_eof(io, buf, limits.max_body_bytes)).await,
    }
    .map_err(|_| HttpError::TimedOut(Phase::Body))??;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Which start line [`read_head`] expects.
#[derive(Clone, Copy)]
enum Start {
    Request,
    Response,
}

/// A head read by [`read_head`].
enum Parsed {
    Request(Head),
    Response(u16, Vec<(String, String)>),
}

/// Reads until a whole head is buffered, with `buf` capped at
/// `limits.max_head_bytes`, and removes the head from `buf`.
async fn read_head(
    io: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut Vec<u8>,
    limits: &Limits,
    start: Start,
) -> Result<Parsed, HttpError> {
    let mut scan_from = 0;
    loop {
        // Parse again only when a line may have ended or begun since the last
        // try, so a peer dripping one byte per read costs no rescan.
        if buf[scan_from..].contains(&b'\n') {
            let parsed = match start {
                Start::Request => parse_request_head(buf, limits.max_headers)?
                    .map(|(h, n)| (Parsed::Request(h), n)),
                Start::Response => parse_response_head(buf, limits.max_headers)?
                    .map(|(s, h, n)| (Parsed::Response(s, h), n)),
            };
            if let Some((parsed, consumed)) = parsed {
                if consumed > limits.max_head_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                buf.drain(..consumed);
                return Ok(parsed);
            }
        }
        if buf.len() >= limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge);
        }
        let before = buf.len();
        let n = read_some(io, buf, limits.max_head_bytes - before).await?;
        if n == 0 {
            return Err(match (start, before) {
                (Start::Request, 0) => HttpError::Empty,
                _ => HttpError::Closed,
            });
        }
        scan_from = before.saturating_sub(1);
    }
}

/// Reads exactly `len` body bytes, first from `buf`, then from `io`.
async fn read_body(
    io: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<Vec<u8>, HttpError> {
    let buffered = len.min(buf.len());
    let mut body: Vec<u8> = buf.drain(..buffered).collect();
    shrink(buf);
    while body.len() < len {
        let want = len - body.len();
        if read_some(io, &mut body, want).await? == 0 {
            return Err(HttpError::Closed);
        }
    }
    Ok(body)
}

/// Reads everything up to EOF, refusing more than `max` bytes.
async fn read_to_eof(
    io: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut body = std::mem::take(buf);
    loop {
        if body.len() > max {
            return Err(HttpError::BodyTooLarge {
                declared: body.len() as u64,
            });
        }
        // Ask for one byte past the cap, so crossing it is seen.
        let want = max + 1 - body.len();
        if read_some(io, &mut body, want).await? == 0 {
            return Ok(body);
        }
    }
}

/// Appends one read of at most `max` (and one chunk) bytes to `buf`.
async fn read_some(
    io: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + max.min(READ_CHUNK_BYTES), 0);
    let res = loop {
        match io.read(&mut buf[start..]).await {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => break res,
        }
    };
    buf.truncate(start + *res.as_ref().unwrap_or(&0));
    res
}

/// Writes and flushes `bytes` before `deadline`.
async fn write_all(
    io: &mut (dyn AsyncWrite + Unpin + Send),
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), HttpError> {
    rt::deadline(deadline, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    .map_err(|_| HttpError::TimedOut(Phase::Write))?
    .map_err(HttpError::Io)
}

/// Gives back the memory of a drained buffer beyond one read chunk.
fn shrink(buf: &mut Vec<u8>) {
    if buf.len() <= READ_CHUNK_BYTES {
        buf.shrink_to(READ_CHUNK_BYTES);
    }
}

/// The last value of header `name`, compared case-insensitively.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The line starting at `pos` without its LF or CRLF, and where the next line
/// starts; `None` while the line has no LF yet.
fn next_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = &buf[pos..];
    let end = rest.iter().position(|&b| b == b'\n')?;
    let line = &rest[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, pos + end + 1))
}

/// Parses header lines from `*pos` through the blank line, advancing `*pos`
/// past it; `None` while incomplete.
fn parse_headers(
    buf: &[u8],
    pos: &mut usize,
    max_headers: usize,
) -> Result<Option<Vec<(String, String)>>, HttpError> {
    let mut headers = Vec::new();
    loop {
        if headers.len() == max_headers {
            // One more header line is refused as soon as its first byte is
            // seen; only CR or LF may start the blank line that ends the head.
            if let Some(&b) = buf.get(*pos) {
                if b != b'\r' && b != b'\n' {
                    return Err(HttpError::TooManyHeaders);
                }
            }
        }
        let Some((line, next)) = next_line(buf, *pos) else {
            return Ok(None);
        };
        *pos = next;
        if line.is_empty() {
            return Ok(Some(headers));
        }
        if headers.len() == max_headers {
            return Err(HttpError::TooManyHeaders);
        }
        headers.push(parse_header_line(line)?);
    }
}

/// Parses `name: value`; the name is a token, the value is trimmed.
fn parse_header_line(line: &[u8]) -> Result<(String, String), HttpError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::Malformed("header line (obsolete line folding)"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::Malformed("header line"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::Malformed("header name"));
    }
    if value.iter().any(|&b| b != b'\t' && b.is_ascii_control()) {
        return Err(HttpError::Malformed("header value"));
    }
    let value = value.trim_ascii();
    // Both are checked ASCII or taken lossily: names are tokens; values may
    // carry obs-text, which is kept readable rather than refused.
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let value = String::from_utf8_lossy(value).into_owned();
    Ok((name, value))
}

/// Parses `METHOD SP TARGET [SP HTTP/1.x]` into method and target.
fn parse_request_line(line: &[u8]) -> Result<(String, String), HttpError> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    if !is_method(method) {
        return Err(HttpError::Malformed("method"));
    }
    if !is_target(target) {
        return Err(HttpError::Malformed("request target"));
    }
    if let Some(version) = parts.next() {
        if !is_version(version) {
            return Err(HttpError::Malformed("http version"));
        }
    }
    if parts.next().is_some() {
        return Err(HttpError::Malformed("request line"));
    }
    // Both checked ASCII above.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    Ok((method, target))
}

/// Parses `HTTP/1.x NNN[ reason]` into the status code.
fn parse_status_line(line: &[u8]) -> Result<u16, HttpError> {
    const BAD: HttpError = HttpError::Malformed("status line");
    let (version, rest) = line.split_at_checked(8).ok_or(BAD)?;
    if !is_version(version) {
        return Err(BAD);
    }
    let rest = rest.strip_prefix(b" ").ok_or(BAD)?;
    let (code, reason) = rest.split_at_checked(3).ok_or(BAD)?;
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(BAD);
    }
    if !(reason.is_empty() || reason[0] == b' ')
        || reason.iter().any(|&b| b != b'\t' && b.is_ascii_control())
    {
        return Err(BAD);
    }
    Ok(code.iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0')))
}

/// A method: one or more ASCII upper-case letters.
fn is_method(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_uppercase)
}

/// A target (or host): printable ASCII, no spaces, not empty.
fn is_target(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_graphic)
}

/// `HTTP/1.` and one digit.
fn is_version(s: &[u8]) -> bool {
    s.len() == 8 && s.starts_with(b"HTTP/1.") && s[7].is_ascii_digit()
}

/// A token character (RFC 9110 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use smol::future;
    use smol::{Async, Timer};

    use super::*;

    // ---- request head parser ----

    macro_rules! req {
        ($name:ident, $buf:expr, $max:expr, |$res:ident| $check:expr) => {
            #[test]
            fn $name() {
                let $res = parse_request_head($buf, $max);
                $check
            }
        };
    }

    fn hdrs(n: usize) -> String {
        (0..n).map(|i| format!("X-H{i}: v\r\n")).collect()
    }

    req!(
        complete_request_parses_and_reports_consumed,
        b"POST /run HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
        32,
        |r| {
            let (head, n) = r.unwrap().unwrap();
            assert_eq!(head.method, "POST");
            assert_eq!(head.target, "/run");
            assert_eq!(
                head.headers,
                vec![
                    ("host".into(), "a".into()),
                    ("content-length".into(), "2".into())
                ]
            );
            assert_eq!(n, 50);
        }
    );
    req!(
        bare_lf_line_endings_are_accepted,
        b"GET /capabilities HTTP/1.0\nX-A:  b \n\n",
        32,
        |r| {
            let (head, n) = r.unwrap().unwrap();
            assert_eq!(head.header("x-a"), Some("b"));
            assert_eq!(n, 37);
        }
    );
    req!(
        request_line_without_version_is_accepted,
        b"GET /ping\r\n\r\n",
        32,
        |r| {
            assert_eq!(r.unwrap().unwrap().0.target, "/ping");
        }
    );
    req!(
        query_string_is_kept_in_target_but_not_path,
        b"GET /result/abc?x=1&y=2 HTTP/1.1\r\n\r\n",
        32,
        |r| {
            let head = r.unwrap().unwrap().0;
            assert_eq!(head.target, "/result/abc?x=1&y=2");
            assert_eq!(head.path(), "/result/abc");
        }
    );
    req!(
        header_lookup_is_case_insensitive_and_last_wins,
        b"GET / HTTP/1.1\r\nX-Tok: 1\r\nx-tok: 2\r\n\r\n",
        32,
        |r| {
            let head = r.unwrap().unwrap().0;
            assert_eq!(head.header("X-TOK"), Some("2"));
            assert_eq!(head.header("missing"), None);
        }
    );
    req!(
        exactly_max_headers_are_accepted,
        format!("GET / HTTP/1.1\r\n{}\r\n", hdrs(32)).as_bytes(),
        32,
        |r| {
            assert_eq!(r.unwrap().unwrap().0.headers.len(), 32);
        }
    );
    req!(
        one_header_over_max_is_too_many,
        format!("GET / HTTP/1.1\r\n{}\r\n", hdrs(33)).as_bytes(),
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::TooManyHeaders)));
        }
    );
    req!(
        one_header_over_max_is_too_many_while_incomplete,
        format!("GET / HTTP/1.1\r\n{}X", hdrs(32)).as_bytes(),
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::TooManyHeaders)));
        }
    );
    req!(
        max_headers_then_partial_blank_line_is_incomplete,
        format!("GET / HTTP/1.1\r\n{}\r", hdrs(32)).as_bytes(),
        32,
        |r| {
            assert!(matches!(r, Ok(None)));
        }
    );
    req!(blank_first_line_is_empty, b"\r\n", 32, |r| assert!(
        matches!(r, Err(HttpError::Empty))
    ));
    req!(bare_lf_first_line_is_empty, b"\n", 32, |r| assert!(
        matches!(r, Err(HttpError::Empty))
    ));
    req!(nothing_is_incomplete, b"", 32, |r| assert!(matches!(
        r,
        Ok(None)
    )));
    req!(
        lowercase_method_is_malformed,
        b"get / HTTP/1.1\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed("method"))));
        }
    );
    req!(missing_target_is_malformed, b"GET\r\n\r\n", 32, |r| {
        assert!(matches!(r, Err(HttpError::Malformed("request target"))));
    });
    req!(
        double_space_is_malformed,
        b"GET  / HTTP/1.1\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed(_))));
        }
    );
    req!(
        control_char_in_target_is_malformed,
        b"GET /a\x01b HTTP/1.1\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed("request target"))));
        }
    );
    req!(
        bad_version_is_malformed,
        b"GET / HTTP/2.0\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed("http version"))));
        }
    );
    req!(
        extra_request_line_field_is_malformed,
        b"GET / HTTP/1.1 x\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed("request line"))));
        }
    );
    req!(
        header_without_colon_is_malformed,
        b"GET / HTTP/1.1\r\nnot a header\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed("header line"))));
        }
    );
    req!(
        space_before_colon_is_malformed,
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed("header name"))));
        }
    );
    req!(
        obsolete_line_folding_is_malformed,
        b"GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed(_))));
        }
    );
    req!(
        control_char_in_value_is_malformed,
        b"GET / HTTP/1.1\r\nX-A: b\x00c\r\n\r\n",
        32,
        |r| {
            assert!(matches!(r, Err(HttpError::Malformed("header value"))));
        }
    );

    #[test]
    fn every_split_of_a_valid_request_is_incomplete() {
        for full in [
            &b"POST /run HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"[..],
            &b"GET /ping HTTP/1.0\nA: b\n\n"[..],
        ] {
            for i in 0..full.len() {
                assert!(
                    matches!(parse_request_head(&full[..i], 32), Ok(None)),
                    "split at {i}"
                );
            }
            let (_, n) = parse_request_head(full, 32).unwrap().unwrap();
            assert_eq!(n, full.len());
        }
    }

    // ---- response head parser ----

    #[test]
    fn response_heads_parse() {
        let (s, h, n) = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", 32)
            .unwrap()
            .unwrap();
        assert_eq!((s, h.len(), n), (200, 1, 38));
        let (s, _, _) = parse_response_head(b"HTTP/1.1 404\r\n\r\n", 32)
            .unwrap()
            .unwrap();
        assert_eq!(s, 404);
        assert!(matches!(
            parse_response_head(b"HTTP/1.0 200 OK\r\nA: b", 32),
            Ok(None)
        ));
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.0 20 OK\r\n\r\n",
            b"HTTP/1.0 2000\r\n\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(parse_response_head(bad, 32), Err(HttpError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    // ---- body_length ----

    macro_rules! len {
        ($name:ident, [$(($n:expr, $v:expr)),*], $max:expr, |$res:ident| $check:expr) => {
            #[test]
            fn $name() {
                let headers: Vec<(String, String)> = vec![$(($n.to_string(), $v.to_string())),*];
                let $res = body_length(&headers, $max);
                $check
            }
        };
    }

    len!(absent_length_is_zero, [("host", "a")], 10, |r| assert_eq!(
        r.unwrap(),
        0
    ));
    len!(
        length_is_read,
        [("content-length", "7")],
        10,
        |r| assert_eq!(r.unwrap(), 7)
    );
    len!(
        leading_zeros_are_fine,
        [("content-length", "007")],
        10,
        |r| assert_eq!(r.unwrap(), 7)
    );
    len!(
        length_at_max_is_accepted,
        [("content-length", "1048576")],
        1_048_576,
        |r| assert_eq!(r.unwrap(), 1_048_576)
    );
    len!(
        length_over_max_is_too_large,
        [("content-length", "1048577")],
        1_048_576,
        |r| {
            assert!(matches!(
                r,
                Err(HttpError::BodyTooLarge {
                    declared: 1_048_577
                })
            ))
        }
    );
    len!(
        duplicate_equal_lengths_are_refused,
        [("content-length", "2"), ("content-length", "2")],
        10,
        |r| assert!(matches!(r, Err(HttpError::BadLength)))
    );
    len!(
        conflicting_lengths_are_refused,
        [("content-length", "2"), ("content-length", "3")],
        10,
        |r| assert!(matches!(r, Err(HttpError::BadLength)))
    );
    len!(
        negative_length_is_refused,
        [("content-length", "-1")],
        10,
        |r| assert!(matches!(r, Err(HttpError::BadLength)))
    );
    len!(empty_length_is_refused, [("content-length", "")], 10, |r| {
        assert!(matches!(r, Err(HttpError::BadLength)))
    });
    len!(
        non_digit_length_is_refused,
        [("content-length", "abc")],
        10,
        |r| assert!(matches!(r, Err(HttpError::BadLength)))
    );
    len!(plus_sign_is_refused, [("content-length", "+5")], 10, |r| {
        assert!(matches!(r, Err(HttpError::BadLength)))
    });
    len!(
        nineteen_digits_is_too_large_not_bad,
        [("content-length", "9999999999999999999")],
        10,
        |r| {
            assert!(matches!(
                r,
                Err(HttpError::BodyTooLarge {
                    declared: 9_999_999_999_999_999_999
                })
            ))
        }
    );
    len!(
        twenty_digits_is_refused,
        [("content-length", "99999999999999999999")],
        10,
        |r| assert!(matches!(r, Err(HttpError::BadLength)))
    );
    len!(
        transfer_encoding_is_unsupported,
        [("transfer-encoding", "chunked"), ("content-length", "2")],
        10,
        |r| {
            assert!(matches!(
                r,
                Err(HttpError::Unsupported("transfer-encoding"))
            ))
        }
    );

    #[test]
    fn statuses_and_phrases_match_the_wire_table() {
        assert_eq!(HttpError::Empty.status(), 400);
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        assert_eq!(HttpError::BodyTooLarge { declared: 1 }.status(), 413);
        assert_eq!(HttpError::TimedOut(Phase::Head).status(), 408);
        assert_eq!(HttpError::Unsupported("transfer-encoding").status(), 400);
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(418), "Unknown");
        assert_eq!(
            HttpError::TimedOut(Phase::Body).to_string(),
            "timed out during body"
        );
    }

    #[test]
    fn module_names_no_role() {
        let roles = [
            ["age", "nt"].concat(),
            ["dispat", "cher"].concat(),
            ["a", "pi"].concat(),
        ];
        // Every file under src/net/, this one included.
        let files = [
            include_str!("accept.rs"),
            include_str!("client.rs"),
            include_str!("http.rs"),
            include_str!("limits.rs"),
            include_str!("mod.rs"),
            include_str!("ratelimit.rs"),
            include_str!("server.rs"),
            include_str!("slots.rs"),
            include_str!("tls.rs"),
        ];
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/net"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("rs".as_ref()))
            .count();
        assert_eq!(on_disk, files.len(), "a file under src/net/ is not checked");
        for src in files {
            for word in src.split(|c: char| !c.is_ascii_alphanumeric()) {
                assert!(
                    !roles.iter().any(|r| word.eq_ignore_ascii_case(r)),
                    "net names role {word:?}"
                );
            }
        }
    }

    // ---- connection, in memory ----

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn tiny() -> Limits {
        Limits {
            max_headers: 4,
            max_head_bytes: 64,
            max_body_bytes: 16,
            head_timeout: Duration::from_millis(200),
            body_timeout: Duration::from_millis(200),
            handshake_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn write_response_is_byte_exact() {
        let mut conn = Conn::new(Vec::new());
        future::block_on(conn.write_response(200, b"{\"ok\":true}", far())).unwrap();
        assert_eq!(
            conn.into_inner(),
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
        );
    }

    #[test]
    fn write_request_is_byte_exact_and_refuses_injection() {
        let mut conn = Conn::new(Vec::new());
        future::block_on(conn.write_request("POST", "/run", "h:7443", Some(b"{}"), far())).unwrap();
        future::block_on(conn.write_request("GET", "/capabilities", "h", None, far())).unwrap();
        assert_eq!(
            conn.into_inner(),
            &b"POST /run HTTP/1.1\r\nHost: h:7443\r\nConnection: close\r\nContent-Type: application/json\r\n\
               Content-Length: 2\r\n\r\n{}GET /capabilities HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"[..]
        );
        let mut conn = Conn::new(Vec::new());
        let res = future::block_on(conn.write_request("GET", "/", "h\r\nX-Evil: 1", None, far()));
        assert!(matches!(res, Err(HttpError::Malformed("host"))));
        assert!(conn.into_inner().is_empty());
    }

    #[test]
    fn two_responses_back_to_back_are_both_read() {
        let mut wire = response_bytes(200, &[], b"{\"status\":\"pending\"}").unwrap();
        wire.extend(response_bytes(200, &[], b"{\"status\":\"approved\"}").unwrap());
        let mut conn = Conn::new(&wire[..]);
        let first = future::block_on(conn.read_response(&Limits::default(), far())).unwrap();
        let second = future::block_on(conn.read_response(&Limits::default(), far())).unwrap();
        assert_eq!(
            (first.status, &first.body[..]),
            (200, &b"{\"status\":\"pending\"}"[..])
        );
        assert_eq!(
            (second.status, &second.body[..]),
            (200, &b"{\"status\":\"approved\"}"[..])
        );
        assert!(matches!(
            future::block_on(conn.read_response(&Limits::default(), far())),
            Err(HttpError::Closed)
        ));
    }

    #[test]
    fn response_without_length_is_read_to_eof_under_the_cap() {
        let mut conn = Conn::new(&b"HTTP/1.0 200 OK\r\n\r\n0123456789abcdef"[..]);
        let res = future::block_on(conn.read_response(&tiny(), far())).unwrap();
        assert_eq!(res.body, b"0123456789abcdef");
        let mut conn = Conn::new(&b"HTTP/1.0 200 OK\r\n\r\n0123456789abcdefg"[..]);
        let res = future::block_on(conn.read_response(&tiny(), far()));
        assert!(matches!(res, Err(HttpError::BodyTooLarge { declared: 17 })));
    }

    #[test]
    fn declared_body_over_limit_is_refused_before_reading_it() {
        // No body follows: reading any of it would end in Closed instead.
        let mut conn = Conn::new(&b"POST /run HTTP/1.1\r\nContent-Length: 17\r\n\r\n"[..]);
        assert!(matches!(
            future::block_on(conn.read_request(&tiny())),
            Err(HttpError::BodyTooLarge { declared: 17 })
        ));
    }

    #[test]
    fn head_cap_is_enforced_at_its_edge() {
        // Exactly 64 bytes of head is accepted, 65 is refused.
        let at = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(64 - 18));
        assert_eq!(at.len(), 64);
        let mut conn = Conn::new(at.as_bytes());
        assert_eq!(
            future::block_on(conn.read_request(&tiny()))
                .unwrap()
                .head
                .target
                .len(),
            47
        );
        let over = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(65 - 18));
        let mut conn = Conn::new(over.as_bytes());
        assert!(matches!(
            future::block_on(conn.read_request(&tiny())),
            Err(HttpError::HeadTooLarge)
        ));
    }

    #[test]
    fn eof_before_and_inside_a_request() {
        let mut conn = Conn::new(&b""[..]);
        assert!(matches!(
            future::block_on(conn.read_request(&tiny())),
            Err(HttpError::Empty)
        ));
        let mut conn = Conn::new(&b"GET / HTTP/1.1\r\nHo"[..]);
        assert!(matches!(
            future::block_on(conn.read_request(&tiny())),
            Err(HttpError::Closed)
        ));
        let mut conn = Conn::new(&b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"[..]);
        assert!(matches!(
            future::block_on(conn.read_request(&tiny())),
            Err(HttpError::Closed)
        ));
    }

    // ---- connection, over TCP ----

    async fn tcp_pair() -> (Async<TcpStream>, Async<TcpStream>) {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let (client, server) =
            future::zip(Async::<TcpStream>::connect(addr), listener.accept()).await;
        (client.unwrap(), server.unwrap().0)
    }

    #[test]
    fn request_with_body_split_over_many_writes_is_read() {
        future::block_on(async {
            let (mut client, server) = tcp_pair().await;
            let body = "x".repeat(10_000);
            let wire = format!(
                "POST /run HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let write = async {
                for chunk in wire.as_bytes().chunks(7) {
                    client.write_all(chunk).await.unwrap();
                    client.flush().await.unwrap();
                }
                client
            };
            let mut conn = Conn::new(server);
            let (_client, req) = future::zip(write, conn.read_request(&Limits::default())).await;
            let req = req.unwrap();
            assert_eq!(req.head.path(), "/run");
            assert_eq!(req.body, body.as_bytes());
        });
    }

    #[test]
    fn peer_stalling_mid_head_times_out() {
        future::block_on(async {
            let (mut client, server) = tcp_pair().await;
            client.write_all(b"GET /ping HTTP/1.1\r\nHo").await.unwrap();
            let start = Instant::now();
            let res = Conn::new(server).read_request(&tiny()).await;
            assert!(
                matches!(res, Err(HttpError::TimedOut(Phase::Head))),
                "{res:?}"
            );
            assert!(start.elapsed() >= Duration::from_millis(200));
            drop(client);
        });
    }

    #[test]
    fn slow_drip_cannot_stretch_the_head_deadline() {
        future::block_on(async {
            let (mut client, server) = tcp_pair().await;
            let drip = async {
                // One byte every 20 ms, each well inside any per-read timeout.
                for b in b"GET /ping HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                    client.write_all(&[*b]).await.unwrap();
                    Timer::after(Duration::from_millis(20)).await;
                }
                future::pending::<()>().await;
            };
            let start = Instant::now();
            let res = future::or(
                async { Some(Conn::new(server).read_request(&tiny()).await) },
                async {
                    drip.await;
                    None
                },
            )
            .await;
            assert!(
                matches!(res, Some(Err(HttpError::TimedOut(Phase::Head)))),
                "{res:?}"
            );
            assert!(start.elapsed() < Duration::from_millis(1_000));
        });
    }

    #[test]
    fn two_responses_on_one_tcp_connection_are_both_read() {
        future::block_on(async {
            let (client, server) = tcp_pair().await;
            let mut server = Conn::new(server);
            server
                .write_response(200, b"{\"n\":1}", far())
                .await
                .unwrap();
            server
                .write_response(200, b"{\"n\":2}", far())
                .await
                .unwrap();
            drop(server);
            let mut client = Conn::new(client);
            let limits = Limits::default();
            assert_eq!(
                client.read_response(&limits, far()).await.unwrap().body,
                b"{\"n\":1}"
            );
            assert_eq!(
                client.read_response(&limits, far()).await.unwrap().body,
                b"{\"n\":2}"
            );
        });
    }

    #[test]
    fn request_then_response_round_trip_over_tcp() {
        future::block_on(async {
            let (client, server) = tcp_pair().await;
            let (mut client, mut server) = (Conn::new(client), Conn::new(server));
            let serve = async {
                let req = server.read_request(&Limits::default()).await.unwrap();
                assert_eq!(req.head.header("host"), Some("h"));
                server.write_response(202, &req.body, far()).await.unwrap();
                drop(server);
            };
            let call = async {
                client
                    .write_request("POST", "/run", "h", Some(b"{\"a\":1}"), far())
                    .await
                    .unwrap();
                client
                    .read_response(&Limits::default(), far())
                    .await
                    .unwrap()
            };
            let ((), res) = future::zip(serve, call).await;
            assert_eq!((res.status, &res.body[..]), (202, &b"{\"a\":1}"[..]));
            assert_eq!(res.headers[1], ("content-length".into(), "7".into()));
        });
    }
}
