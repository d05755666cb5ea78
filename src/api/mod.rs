//! `ctrl-exec-api`: the HTTP/JSON gateway on the dispatcher host.
//!
//! Same bounded HTTP stack as the agent, plain HTTP by default or TLS when
//! `api_cert`/`api_key` are set and present. One request per connection.
//! At most `api_max_children` connections are held at once. A full table
//! sheds its oldest connection that has not yet sent a whole request (see
//! `net::slots`), so stalled or half-sent requests cannot keep a real one
//! out; when every slot carries a whole request, a connection gets 503 (a
//! small second pool writes those answers, and past it connections are
//! closed). Routes live in `routes`, the live OpenAPI
//! document in `openapi`.

mod openapi;
mod routes;

use std::fmt;
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};
use smol::lock::Semaphore;
use smol::stream::StreamExt;
use smol::Async;

use crate::conf::{ConfError, DispatcherConf};
use crate::control::dispatch::Dispatch;
use crate::control::engine::EngineError;
use crate::exit::{self, Failure, Outcome};
use crate::net::accept::{self, Incoming, Policy, Work};
use crate::net::http::{Conn, HalfClose, HttpError};
use crate::net::limits::Limits;
use crate::net::server::{self, HandshakeError};
use crate::net::slots::{SlotHandle, SlotTable};
use crate::net::tls::{self, Identity};
use crate::proto::json;
use crate::proto::ErrorBody;
use crate::rt::FileWork;
use crate::{log, out, outln, rt, VERSION};
use miniserde::json::Value;

const DEFAULT_CONFIG: &str = "/etc/ctrl-exec/ctrl-exec.conf";

/// Connections answered 503 at once beyond `api_max_children`; past this
/// they are closed without an answer.
const OVERFLOW_ANSWERS: usize = 16;

const USAGE: &str = "Usage: ctrl-exec-api [--config <path>] [--check] [--version]

Serves the HTTP/JSON API (api_bind:api_port, default 127.0.0.1:7445) until
SIGTERM; SIGHUP reloads ctrl-exec.conf. With --check, loads the config, the
dispatcher's key and certificate and the API's TLS files, then exits.

Options:
  --config <path>  dispatcher config (default /etc/ctrl-exec/ctrl-exec.conf)
  --check          exit 0 if it would serve, 78 if not (the reason on stderr)
  --version        print the version

Exit: 0 stopped by a signal (or --check passed), 1 cannot listen,
64 usage, 78 unusable configuration, key or certificate.
";

/// Shared state of the API server.
pub struct Api {
    /// The one dispatch path (config, registry, engine, run store, locks).
    pub dispatch: Dispatch,
    /// Request bounds.
    pub limits: Limits,
}

/// Errors of the API role, each knowing its exit code.
#[derive(Debug)]
pub enum ApiError {
    /// Bad invocation.
    Usage(String),
    /// ctrl-exec.conf is unusable.
    Config(ConfError),
    /// The dispatcher's identity could not be loaded.
    Engine(EngineError),
    /// The API's own TLS certificate or key is unusable.
    Tls(String),
    /// The listener could not be bound.
    Listen(String),
    /// Stdout could not be written.
    Output(std::io::Error),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Usage(m) => write!(f, "{m}\n{USAGE}"),
            ApiError::Config(e) => write!(f, "{e}"),
            ApiError::Engine(e) => write!(f, "{e}"),
            ApiError::Tls(m) | ApiError::Listen(m) => write!(f, "{m}"),
            ApiError::Output(e) => write!(f, "cannot write output: {e}"),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError::Output(e)
    }
}

impl Failure for ApiError {
    fn exit_code(&self) -> u8 {
        match self {
            ApiError::Usage(_) => exit::USAGE,
            // Restarting cannot help: the service managers do not respawn 78.
            ApiError::Config(_) | ApiError::Engine(_) | ApiError::Tls(_) => exit::CONFIG,
            ApiError::Output(e) if exit::is_closed_output(e) => exit::SUCCESS,
            ApiError::Listen(_) | ApiError::Output(_) => exit::FAILURE,
        }
    }

    fn quiet(&self) -> bool {
        matches!(self, ApiError::Output(e) if exit::is_closed_output(e))
    }
}

/// Entry point of the API role.
pub fn main(args: Vec<String>) -> Outcome {
    entry(args).map_err(|e| Box::new(e) as Box<dyn Failure>)
}

fn entry(args: Vec<String>) -> Result<u8, ApiError> {
    let mut p = pico_args::Arguments::from_vec(args.into_iter().map(Into::into).collect());
    if p.contains(["-h", "--help"]) {
        out!("{USAGE}")?;
        return Ok(exit::SUCCESS);
    }
    if p.contains("--version") {
        outln!("ctrl-exec-api {VERSION}")?;
        return Ok(exit::SUCCESS);
    }
    let config: PathBuf = p
        .opt_value_from_str("--config")
        .map_err(|e| ApiError::Usage(e.to_string()))?
        .unwrap_or_else(|| DEFAULT_CONFIG.into());
    let check_only = p.contains("--check");
    if let Some(extra) = p.finish().first() {
        return Err(ApiError::Usage(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }
    if check_only {
        let conf = DispatcherConf::load(&config).map_err(ApiError::Config)?;
        api_tls(&conf)?;
        let (bind, port) = (conf.api_bind.clone(), conf.api_port);
        Dispatch::new(conf, FileWork::Offloaded).map_err(ApiError::Engine)?;
        outln!("ready to serve on {bind}:{port}")?;
        return Ok(exit::SUCCESS);
    }
    serve(&config)?;
    Ok(exit::SUCCESS)
}

fn serve(config: &std::path::Path) -> Result<(), ApiError> {
    let conf = DispatcherConf::load(config).map_err(ApiError::Config)?;
    log::init(
        "ctrl-exec-api",
        if conf.syslog {
            log::Target::Syslog
        } else {
            log::Target::Stderr
        },
    );
    for w in &conf.warnings {
        w.log();
    }
    let tls_config = api_tls(&conf)?;
    let listener = server::bind(&conf.api_bind, conf.api_port).map_err(|e| {
        ApiError::Listen(format!(
            "cannot listen on {}:{}: {e}",
            conf.api_bind, conf.api_port
        ))
    })?;
    let addr = server::local_addr(&listener).map_err(|e| ApiError::Listen(e.to_string()))?;
    let api = Arc::new(Api {
        dispatch: Dispatch::new(conf, FileWork::Offloaded).map_err(ApiError::Engine)?,
        limits: Limits::default(),
    });
    let served = Served {
        api,
        tls: tls_config,
    };
    let mode = if served.tls.is_some() {
        "TLS"
    } else {
        "plain HTTP"
    };
    log::info(
        "api-start",
        &[
            ("BIND", &addr.ip().to_string()),
            ("PORT", &addr.port().to_string()),
            ("TLS", if served.tls.is_some() { "1" } else { "0" }),
        ],
    );
    outln!("ctrl-exec API listening on {addr} ({mode})")?;
    rt::block_on(accept_loop(config.to_path_buf(), served, listener));
    log::info("api-stop", &[]);
    // The reader of stdout may be gone by now; stopping is still clean.
    let _ = outln!("\nAPI server stopped.");
    Ok(())
}

/// The API's TLS server configuration from `api_cert`/`api_key`, when both
/// are set and present; `None` serves plain HTTP.
fn api_tls(conf: &DispatcherConf) -> Result<Option<Arc<rustls::ServerConfig>>, ApiError> {
    match (&conf.api_cert, &conf.api_key) {
        (Some(c), Some(k)) if c.exists() && k.exists() => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| ApiError::Tls(format!("cannot read {}: {e}", p.display())))
            };
            let identity = Identity::from_pem(&read(c)?, &read(k)?)
                .map_err(|e| ApiError::Tls(e.to_string()))?;
            Ok(Some(
                tls::plain_server(&identity).map_err(|e| ApiError::Tls(e.to_string()))?,
            ))
        }
        _ => Ok(None),
    }
}

/// What a connection is served with: taken once when it is accepted, so a
/// reload never changes a request in flight.
#[derive(Clone)]
struct Served {
    api: Arc<Api>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Reads one key's value from a loaded config, for comparison.
type ConfValue = fn(&DispatcherConf) -> String;

/// ctrl-exec.conf keys the running listener was built from, with how to
/// read each; a reload that changes one logs that a restart is needed and
/// keeps serving as before.
const RESTART_KEYS: &[(&str, ConfValue)] = &[
    ("api_bind", |c| c.api_bind.clone()),
    ("api_port", |c| c.api_port.to_string()),
    ("api_max_children", |c| c.api_max_children.to_string()),
];

/// The accept loop's rules for the API port.
struct Gateway {
    config: PathBuf,
    served: std::sync::RwLock<Served>,
    /// Permits for the connections answered 503 beyond `api_max_children`.
    overflow: Arc<Semaphore>,
}

impl Gateway {
    fn served(&self) -> Served {
        match self.served.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// SIGHUP: re-reads ctrl-exec.conf, the dispatcher identity and the
    /// API's certificate; applies them to new connections, or keeps the
    /// previous configuration and logs one error when anything fails.
    /// Blocking (file reads).
    fn reload(&self) {
        let running = self.served();
        let fresh = DispatcherConf::load(&self.config)
            .map_err(ApiError::Config)
            .and_then(|conf| {
                let tls = api_tls(&conf)?;
                Ok((conf, tls))
            })
            .and_then(|(conf, tls)| {
                for w in &conf.warnings {
                    w.log();
                }
                for (key, value) in RESTART_KEYS {
                    if value(&running.api.dispatch.conf) != value(&conf) {
                        log::warn(
                            "reload-restart-needed",
                            &[(
                                "MSG",
                                &format!("ctrl-exec.conf: {key} changed; restart required"),
                            )],
                        );
                    }
                }
                let api = Arc::new(Api {
                    dispatch: Dispatch::new(conf, FileWork::Offloaded).map_err(ApiError::Engine)?,
                    limits: Limits::default(),
                });
                Ok(Served { api, tls })
            });
        match fresh {
            Ok(served) => {
                let tls = if served.tls.is_some() { "1" } else { "0" };
                if let Ok(mut s) = self.served.write() {
                    *s = served;
                }
                log::info("api-reload", &[("TLS", tls)]);
            }
            Err(e) => log::error(
                "reload-fail",
                &[(
                    "MSG",
                    &format!("reload failed, keeping previous configuration: {e}"),
                )],
            ),
        }
    }
}

async fn accept_loop(config: PathBuf, served: Served, listener: Async<std::net::TcpListener>) {
    let slots = SlotTable::new(served.api.dispatch.conf.api_max_children);
    let gateway = Arc::new(Gateway {
        config,
        served: std::sync::RwLock::new(served),
        overflow: Arc::new(Semaphore::new(OVERFLOW_ANSWERS)),
    });
    let reloading = gateway.clone();
    // Reloads on SIGHUP (off the executor: it reads files) while the loop
    // accepts; completes on SIGTERM/SIGINT.
    let stop = async move {
        use async_signal::Signal;
        match async_signal::Signals::new([Signal::Hup, Signal::Term, Signal::Int]) {
            Ok(mut s) => {
                while let Some(Ok(Signal::Hup)) = s.next().await {
                    let g = reloading.clone();
                    smol::unblock(move || g.reload()).await;
                }
            }
            Err(_) => smol::future::pending::<()>().await,
        }
    };
    accept::serve(&listener, &slots, gateway, stop).await;
}

impl Policy for Gateway {
    fn serve(self: Arc<Self>, conn: Incoming) -> Work {
        let served = self.served();
        async move {
            connection(
                &served.api,
                served.tls,
                conn.tcp,
                conn.peer,
                Some(conn.slot),
            )
            .await;
        }
        .boxed()
    }

    /// No room: answer 503 from the small overflow pool while it has room,
    /// then close without an answer.
    fn full(self: Arc<Self>, conn: Incoming) -> Option<Work> {
        log::warn("api-overload", &[("PEER", &conn.peer.to_string())]);
        let slot = self.overflow.try_acquire_arc()?;
        let served = self.served();
        Some(
            async move {
                connection(&served.api, served.tls, conn.tcp, conn.peer, None).await;
                drop(slot);
            }
            .boxed(),
        )
    }
}

/// One connection: `slot` is its place in the table, `None` for one
/// answered 503 from the overflow pool.
async fn connection(
    api: &Api,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    tcp: Async<TcpStream>,
    ip: IpAddr,
    slot: Option<SlotHandle>,
) {
    match tls_config {
        None => exchange(api, Conn::new(tcp), ip, slot).await,
        Some(cfg) => match server::handshake(cfg, tcp, api.limits.handshake_timeout).await {
            Ok(stream) => exchange(api, Conn::new(stream), ip, slot).await,
            Err(HandshakeError::Closed) => {}
            Err(e) => log::info(
                "tls-failure",
                &[("PEER", &ip.to_string()), ("REASON", &e.to_string())],
            ),
        },
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + HalfClose + Unpin + Send>(
    api: &Api,
    mut conn: Conn<S>,
    ip: IpAddr,
    slot: Option<SlotHandle>,
) {
    let (status, body) = match slot {
        None => (
            503,
            ErrorBody::new("service unavailable", "too many concurrent requests").to_json(),
        ),
        Some(slot) => match conn.read_request(&api.limits).await {
            Ok(req) => {
                // A whole request: from now on this connection is never
                // shed to make room.
                slot.establish();
                let path = req.head.path().to_string();
                let reply = routes::handle(api, req, ip).await;
                if reply.0 == 405 {
                    let allow = routes::allowed(&path).unwrap_or("GET");
                    conn.respond_and_close_with(
                        405,
                        &[("Allow", allow)],
                        json::to_string(&reply.1).as_bytes(),
                        &api.limits,
                    )
                    .await;
                    return;
                }
                reply
            }
            Err(e) => match http_error(&e) {
                Some(reply) => reply,
                None => return,
            },
        },
    };
    conn.respond_and_close(status, json::to_string(&body).as_bytes(), &api.limits)
        .await;
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
    Some((e.status(), ErrorBody::new(error, detail).to_json()))
}
