//! `ctrl-exec-api`: the HTTP/JSON gateway on the dispatcher host.
//!
//! Same bounded HTTP stack as the agent, plain HTTP by default or TLS when
//! `api_cert`/`api_key` are set and present. One request per connection.
//! At most `api_max_children` requests are handled at once; beyond that a
//! connection gets 503 (a small second pool writes those answers, and past it
//! connections are closed). Routes live in `routes`, the live OpenAPI
//! document in `openapi`.

mod openapi;
mod routes;

use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::lock::Semaphore;
use smol::stream::StreamExt;
use smol::Async;

use crate::conf::DispatcherConf;
use crate::control::engine::Engine;
use crate::json::{self, Value};
use crate::net::accept::{self, Incoming, Policy, Work};
use crate::net::http::{Conn, HttpError};
use crate::net::limits::Limits;
use crate::net::server;
use crate::net::tls::{self, Identity};
use crate::{log, rt, VERSION};

const DEFAULT_CONFIG: &str = "/etc/ctrl-exec/ctrl-exec.conf";

/// Connections answered 503 at once beyond `api_max_children`; past this
/// they are closed without an answer.
const OVERFLOW_ANSWERS: usize = 16;

const USAGE: &str = "Usage: ctrl-exec-api [--config <path>] [--version]\n";

/// Shared state of the API server.
pub struct Api {
    /// ctrl-exec.conf.
    pub conf: DispatcherConf,
    /// The client side, for talking to agents.
    pub engine: Arc<Engine>,
    /// Request bounds.
    pub limits: Limits,
}

/// Entry point of the API role.
pub fn main(args: Vec<String>) -> ExitCode {
    let mut p = pico_args::Arguments::from_vec(args.into_iter().map(Into::into).collect());
    if p.contains(["-h", "--help"]) {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if p.contains("--version") {
        println!("ctrl-exec-api {VERSION}");
        return ExitCode::SUCCESS;
    }
    let config: PathBuf = match p.opt_value_from_str("--config") {
        Ok(c) => c.unwrap_or_else(|| DEFAULT_CONFIG.into()),
        Err(e) => {
            eprintln!("ctrl-exec-api: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(extra) = p.finish().first() {
        eprintln!(
            "ctrl-exec-api: unexpected argument '{}'\n{USAGE}",
            extra.to_string_lossy()
        );
        return ExitCode::from(2);
    }
    match serve(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctrl-exec-api: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(config: &std::path::Path) -> Result<(), String> {
    let conf = DispatcherConf::load(config).map_err(|e| e.to_string())?;
    log::init(
        "ctrl-exec-api",
        if conf.syslog {
            log::Target::Syslog
        } else {
            log::Target::Stderr
        },
    );
    let tls_config = match (&conf.api_cert, &conf.api_key) {
        (Some(c), Some(k)) if c.exists() && k.exists() => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let identity = Identity::from_pem(&read(c)?, &read(k)?).map_err(|e| e.to_string())?;
            Some(tls::plain_server(&identity).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let engine = Engine::new(&conf)?;
    let listener = server::bind(&conf.api_bind, conf.api_port)
        .map_err(|e| format!("cannot listen on {}:{}: {e}", conf.api_bind, conf.api_port))?;
    let addr = server::local_addr(&listener).map_err(|e| e.to_string())?;
    let api = Arc::new(Api {
        conf,
        engine,
        limits: Limits::default(),
    });
    let mode = if tls_config.is_some() {
        "TLS"
    } else {
        "plain HTTP"
    };
    log::info(
        "api-start",
        &[
            ("BIND", &addr.ip().to_string()),
            ("PORT", &addr.port().to_string()),
            ("TLS", if tls_config.is_some() { "1" } else { "0" }),
        ],
    );
    println!("ctrl-exec API listening on {addr} ({mode})");
    rt::block_on(accept_loop(api, listener, tls_config));
    log::info("api-stop", &[]);
    println!("\nAPI server stopped.");
    Ok(())
}

/// The accept loop's rules for the API port.
struct Gateway {
    api: Arc<Api>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Permits for the connections answered 503 beyond `api_max_children`.
    overflow: Arc<Semaphore>,
}

async fn accept_loop(
    api: Arc<Api>,
    listener: Async<std::net::TcpListener>,
    tls_config: Option<Arc<rustls::ServerConfig>>,
) {
    let slots = Arc::new(Semaphore::new(api.conf.api_max_children.max(1)));
    let gateway = Arc::new(Gateway {
        api,
        tls: tls_config,
        overflow: Arc::new(Semaphore::new(OVERFLOW_ANSWERS)),
    });
    let stop = async {
        match async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) {
            Ok(mut s) => {
                s.next().await;
            }
            Err(_) => smol::future::pending::<()>().await,
        }
    };
    accept::serve(&listener, &slots, gateway, stop).await;
}

impl Policy for Gateway {
    fn serve(self: Arc<Self>, conn: Incoming) -> Work {
        async move {
            connection(&self.api, self.tls.clone(), conn.tcp, conn.peer, false).await;
        }
        .boxed()
    }

    /// No room: answer 503 from the small overflow pool while it has room,
    /// then close without an answer.
    fn full(self: Arc<Self>, conn: Incoming) -> Option<Work> {
        log::warn("api-overload", &[("PEER", &conn.peer.to_string())]);
        let slot = self.overflow.try_acquire_arc()?;
        Some(
            async move {
                connection(&self.api, self.tls.clone(), conn.tcp, conn.peer, true).await;
                drop(slot);
            }
            .boxed(),
        )
    }
}

async fn connection(
    api: &Api,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    tcp: Async<TcpStream>,
    ip: IpAddr,
    overloaded: bool,
) {
    match tls_config {
        None => exchange(api, Conn::new(tcp), ip, overloaded).await,
        Some(cfg) => match server::handshake(cfg, tcp, api.limits.handshake_timeout).await {
            Ok(stream) => exchange(api, Conn::new(stream), ip, overloaded).await,
            Err(e) => log::info(
                "tls-failure",
                &[("PEER", &ip.to_string()), ("REASON", &e.to_string())],
            ),
        },
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send>(
    api: &Api,
    mut conn: Conn<S>,
    ip: IpAddr,
    overloaded: bool,
) {
    let (status, body) = if overloaded {
        (
            503,
            error_body("service unavailable", Some("too many concurrent requests")),
        )
    } else {
        match conn.read_request(&api.limits).await {
            Ok(req) => routes::handle(api, req, ip).await,
            Err(e) => match http_error(&e) {
                Some(reply) => reply,
                None => return,
            },
        }
    };
    let deadline = Instant::now() + api.limits.write_timeout;
    if conn
        .write_response(status, json::to_string(&body).as_bytes(), deadline)
        .await
        .is_ok()
    {
        let _ = rt::deadline(deadline, conn.io.close()).await;
    }
}

/// The API's answer to a request that could not be read (`None`: the peer
/// left or stalled and gets nothing).
fn http_error(e: &HttpError) -> Option<(u16, Value)> {
    let (error, detail) = match e {
        HttpError::TimedOut(_) | HttpError::Closed | HttpError::Io(_) => return None,
        HttpError::Empty => ("bad request", "empty request".to_string()),
        HttpError::TooManyHeaders => (
            "request header fields too large",
            "more than 32 header lines".to_string(),
        ),
        HttpError::HeadTooLarge => (
            "request header fields too large",
            "request head too large".to_string(),
        ),
        HttpError::BodyTooLarge { .. } => (
            "payload too large",
            "body exceeds 1048576 bytes".to_string(),
        ),
        other => ("bad request", other.to_string()),
    };
    Some((e.status(), error_body(error, Some(&detail))))
}

/// `{"ok":false,"error":...[,"detail":...]}`.
pub fn error_body(error: &str, detail: Option<&str>) -> Value {
    match detail {
        Some(d) => json::object([
            ("ok", Value::Bool(false)),
            ("error", json::str(error)),
            ("detail", json::str(d)),
        ]),
        None => json::object([("ok", Value::Bool(false)), ("error", json::str(error))]),
    }
}
