//! The fan-out engine: one mTLS request per agent, at most `max_parallel` at
//! once, each bounded by `read_timeout`.
//!
//! Before a request leaves, the agent's certificate must carry the public key
//! recorded for that registry entry at pairing, so a request (and its token)
//! never reaches an impostor that merely holds some certificate from our CA.
//! A peer whose certificate serial or public key is in the dispatcher's
//! revocation list (`<state_dir>/revoked-agents`, [`crate::control::revoked`])
//! is refused the same way, pinned or not: the list is read on every call,
//! so `ced unpair --revoke` takes effect for a running API at once.
//! The engine presents the dispatcher certificate named in the config and,
//! during a rotation's overlap, can present the previous one
//! ([`Engine::call_previous`], `<cert>.previous`): agents that missed the
//! new serial's announcement still trust only that one. Both are read again
//! when the files change (checked at most once a second), so a long-running
//! API follows a rotation made by `ced maintain`.
//! Transport failures are worded for operators, in the original's phrases.
//! Replies are parsed with the depth bound of [`crate::proto::limits`], so a
//! hostile agent's body cannot overflow a stack later.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use miniserde::json::{Object, Value};
use rustls::ClientConfig;
use smol::lock::Semaphore;

use crate::conf::DispatcherConf;
use crate::control::registry::Target;
use crate::control::revoked::RevokedAgents;
use crate::net::client::{self, ClientError};
use crate::net::limits::Limits;
use crate::net::tls::{self, Identity, TlsError};
use crate::proto::json::{self, JsonError};
use crate::proto::Rtt;
use crate::rt::FileWork;
use crate::{log, pki, rt};

/// Worst-case growth of captured output written as JSON: a control byte
/// becomes `\u00XX`.
const JSON_ESCAPE_FACTOR: usize = 6;

/// Room for everything in a run reply but the two output streams.
const REPLY_FRAMING_BYTES: usize = 64 << 10;

/// The largest agent reply worth reading: a run result carries stdout and
/// stderr, each up to the agents' `max_output_bytes` and JSON-escaped, plus
/// framing. Anything longer is not a reply this protocol produces.
pub fn max_reply_bytes(max_output_bytes: usize) -> usize {
    max_output_bytes
        .saturating_mul(2 * JSON_ESCAPE_FACTOR)
        .saturating_add(REPLY_FRAMING_BYTES)
}

/// What one call produced.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as a JSON object, or why it is not one.
    pub body: Result<Object, JsonError>,
    /// Round-trip time.
    pub rtt: Rtt,
}

/// Why a call produced no reply.
#[derive(Debug)]
pub enum CallError {
    /// The transport failed.
    Transport {
        /// Registry name.
        host: String,
        /// Port tried.
        port: u16,
        /// The configured timeout, for the message.
        read_timeout: Duration,
        /// What failed.
        error: ClientError,
    },
    /// The agent's key is not the one recorded at pairing.
    KeyMismatch {
        /// Registry name.
        host: String,
    },
    /// The agent presented a revoked certificate serial or key, or the
    /// revocation list could not be read.
    Revoked {
        /// Registry name.
        host: String,
        /// What matched (`serial <hex>`, `key <sha256>`) or why the list is
        /// unreadable.
        what: String,
    },
}

impl fmt::Display for CallError {
    /// Words a failure for an operator (reference surface.md 1.3).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, port, read_timeout, e) = match self {
            CallError::KeyMismatch { host } => {
                return write!(
                    f,
                    "agent '{host}' presented a different key than the one recorded at pairing - refusing to talk to it"
                )
            }
            CallError::Revoked { host, what } => {
                return write!(
                    f,
                    "agent '{host}' presented a revoked certificate ({what}) - refusing to talk to it"
                )
            }
            CallError::Transport {
                host,
                port,
                read_timeout,
                error,
            } => (host, port, read_timeout, error),
        };
        match e {
            ClientError::Resolve => write!(f, "host '{h}' did not resolve - check the name or use an IP address"),
            ClientError::Refused => write!(
                f,
                "host '{h}' did not respond on port {port} - connection refused (agent not running, or wrong port?)"
            ),
            ClientError::Unreachable => write!(f, "host '{h}' is unreachable - no route to host or network down"),
            ClientError::ConnectTimeout => write!(f, "host '{h}' did not respond - connection timed out"),
            ClientError::HandshakeClosed => write!(
                f,
                "host '{h}' accepted the connection on port {port} but closed it before the TLS handshake - the agent refused it (overloaded, or this host is not in its allowed_ips), or it is not a ctrl-exec agent"
            ),
            ClientError::HandshakeTimeout => write!(
                f,
                "host '{h}' accepted the connection but the TLS handshake timed out - the agent is overloaded or stalled"
            ),
            ClientError::Tls(reason) => write!(
                f,
                "TLS handshake with '{h}' failed - certificate or trust mismatch ({reason})"
            ),
            ClientError::ReadTimeout => write!(f, "read timeout after {}s", read_timeout.as_secs()),
            ClientError::Reset => write!(
                f,
                "host '{h}' closed the connection before its reply was complete - the agent stopped or was restarted mid-request"
            ),
            ClientError::Http(e) => write!(f, "invalid response from '{h}': {}", client::without_urls(&e.to_string())),
            ClientError::Io(e) => write!(f, "connection to '{h}' failed: {}", client::without_urls(&e.to_string())),
        }
    }
}

impl std::error::Error for CallError {}

/// Why the engine could not be set up.
#[derive(Debug)]
pub struct EngineError(pub String);

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EngineError {}

/// The certificates the engine presents.
pub struct Identities {
    /// Presents the current dispatcher certificate.
    pub current: Arc<ClientConfig>,
    /// The current certificate's PEM (announced by `/rotate-serial`).
    pub cert_pem: String,
    /// The current certificate's serial.
    pub serial: String,
    /// During a rotation's overlap: the previous certificate's client
    /// configuration and serial.
    pub previous: Option<(Arc<ClientConfig>, String)>,
}

/// What the identity files looked like when last read: size, inode and
/// modification time of the certificate and of the previous certificate.
type Stamp = [Option<(u64, u64, std::time::SystemTime)>; 2];

/// How long a read of the identity files is trusted before their stamps are
/// looked at again (one `stat` pair a second at most, however many calls).
const IDENTITY_RECHECK: Duration = Duration::from_secs(1);

/// The shared client side of the dispatcher host.
pub struct Engine {
    ids: std::sync::RwLock<Arc<Identities>>,
    /// When the identity files were last looked at, and their stamp then.
    ids_checked: smol::lock::Mutex<(Instant, Stamp)>,
    paths: IdentityPaths,
    read_timeout: Duration,
    slots: Arc<Semaphore>,
    limits: Limits,
    revoked_path: PathBuf,
    /// The revocation list as last read, and when: shared by every call of
    /// a fan-out instead of one read per host.
    revoked: smol::lock::Mutex<Option<ReadRevoked>>,
    files: FileWork,
}

/// A revocation list read at an instant (or why it could not be read).
type ReadRevoked = (Instant, Arc<Result<RevokedAgents, String>>);

/// How long a read revocation list is reused before it is read again: a
/// thousand-host fan-out reads it once, and a long-running API sees an
/// `unpair --revoke` within this long.
const REVOKED_LIST_REUSE: Duration = Duration::from_secs(1);

/// Where the identity files are.
#[derive(Debug, Clone)]
struct IdentityPaths {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    previous_cert: PathBuf,
    previous_key: PathBuf,
}

impl IdentityPaths {
    fn stamp(&self) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let of = |p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.ino(), m.modified().ok()?)))
        };
        [of(&self.cert), of(&self.previous_cert)]
    }

    /// Reads every identity file: the current pair must load and belong
    /// together; a previous pair that is absent or does not load is none.
    fn load(&self) -> Result<Identities, EngineError> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map_err(|e| EngineError(format!("cannot read {}: {e}", p.display())))
        };
        let ca = pki::pem_certs(&read(&self.ca)?)
            .into_iter()
            .next()
            .ok_or_else(|| EngineError(format!("{}: no certificate", self.ca.display())))?;
        let (cert_pem, key_pem) = (read(&self.cert)?, read(&self.key)?);
        let (current, serial) = client_config(&cert_pem, &key_pem, &ca).map_err(|e| {
            EngineError(format!(
                "{} with {}: {e}",
                self.cert.display(),
                self.key.display()
            ))
        })?;
        let previous = match (read(&self.previous_cert), read(&self.previous_key)) {
            (Ok(c), Ok(k)) => match client_config(&c, &k, &ca) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn(
                        "identity-previous",
                        &[
                            ("ERROR", &e),
                            ("PATH", &self.previous_cert.display().to_string()),
                        ],
                    );
                    None
                }
            },
            _ => None,
        };
        Ok(Identities {
            current,
            cert_pem,
            serial,
            previous,
        })
    }
}

/// A client configuration presenting `cert_pem` with `key_pem`, and the
/// certificate's serial; refuses a key that is not the certificate's (the
/// trace of an interrupted install, which `ced maintain` repairs).
fn client_config(
    cert_pem: &str,
    key_pem: &str,
    ca: &[u8],
) -> Result<(Arc<ClientConfig>, String), String> {
    let info = pki::cert_info_pem(cert_pem).map_err(|e| e.to_string())?;
    let identity = Identity::from_pem(cert_pem, key_pem).map_err(|e| e.to_string())?;
    // The key pair is derived once, here; a mismatch is worded for the
    // operator rather than as the TLS library's.
    let tls = tls::mtls_client(&identity, ca).map_err(|e| match e {
        TlsError::Config(rustls::Error::InconsistentKeys(_)) => "the key does not belong to the certificate (an interrupted rotate-cert? run 'ctrl-exec-dispatcher maintain')".to_string(),
        other => other.to_string(),
    })?;
    Ok((tls, info.serial))
}

impl Engine {
    /// Loads the dispatcher identity (and a previous one, during a
    /// rotation's overlap) and the CA named in the config.
    /// `files` says where the identity and revocation reads run.
    pub fn new(conf: &DispatcherConf, files: FileWork) -> Result<Arc<Engine>, EngineError> {
        let paths = IdentityPaths {
            cert: conf.cert.clone(),
            key: conf.key.clone(),
            ca: conf.ca.clone(),
            previous_cert: conf.previous_cert_path(),
            previous_key: conf.previous_key_path(),
        };
        let stamp = paths.stamp();
        let ids = paths.load()?;
        Ok(Arc::new(Engine {
            ids: std::sync::RwLock::new(Arc::new(ids)),
            ids_checked: smol::lock::Mutex::new((Instant::now(), stamp)),
            paths,
            read_timeout: conf.read_timeout,
            slots: Arc::new(Semaphore::new(conf.max_parallel.max(1))),
            limits: Limits {
                max_body_bytes: max_reply_bytes(conf.max_output_bytes),
                ..Limits::default()
            },
            revoked_path: conf.revoked_agents_path(),
            revoked: smol::lock::Mutex::new(None),
            files,
        }))
    }

    /// The identities as last read.
    pub fn identities(&self) -> Arc<Identities> {
        match self.ids.read() {
            Ok(i) => i.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The identities, read again first if the files changed since the
    /// last look (at most one look per [`IDENTITY_RECHECK`]). A change that
    /// does not load is logged and the identities in use are kept.
    pub async fn fresh_identities(&self) -> Arc<Identities> {
        let mut checked = self.ids_checked.lock().await;
        if checked.0.elapsed() >= IDENTITY_RECHECK {
            let paths = self.paths.clone();
            let stamp = self.files.run(move || paths.stamp()).await;
            if stamp != checked.1 {
                if let Err(e) = self.reload_identities().await {
                    log::warn("identity-reload", &[("ERROR", &e.0)]);
                }
            }
            *checked = (Instant::now(), stamp);
        }
        self.identities()
    }

    /// Reads the identity files now and uses what they hold from the next
    /// call on (after a rotation installed a new certificate).
    pub async fn reload_identities(&self) -> Result<(), EngineError> {
        let paths = self.paths.clone();
        let ids = self.files.run(move || paths.load()).await?;
        match self.ids.write() {
            Ok(mut i) => *i = Arc::new(ids),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ids),
        }
        Ok(())
    }

    /// One request to one agent, under a `max_parallel` slot.
    pub async fn call(
        &self,
        target: &Target,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, CallError> {
        let tls = self.fresh_identities().await.current.clone();
        self.call_with(tls, target, method, path, body).await
    }

    /// Like [`Engine::call`], presenting the previous dispatcher
    /// certificate; `None` when there is none (no rotation in its overlap).
    pub async fn call_previous(
        &self,
        target: &Target,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<Result<Reply, CallError>> {
        let (tls, _) = self.fresh_identities().await.previous.clone()?;
        Some(self.call_with(tls, target, method, path, body).await)
    }

    async fn call_with(
        &self,
        tls: Arc<ClientConfig>,
        target: &Target,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, CallError> {
        let _slot = self.slots.acquire().await;
        let started = Instant::now();
        let deadline = started + self.read_timeout;
        let transport = |error| CallError::Transport {
            host: target.name.clone(),
            port: target.port,
            read_timeout: self.read_timeout,
            error,
        };
        let stream = client::connect_tls(&target.host, target.port, tls, deadline)
            .await
            .map_err(transport)?;
        let peer = client::peer_certificate(&stream).and_then(|der| pki::cert_info_der(&der).ok());
        self.check_revoked(target, peer.as_ref()).await?;
        if !target.pubkey_sha256.is_empty() {
            let presented = peer.map(|i| i.spki_sha256).unwrap_or_default();
            if presented != target.pubkey_sha256 {
                log::warn(
                    "agent-key-mismatch",
                    &[
                        ("AGENT", &target.name),
                        ("TARGET", &format!("{}:{}", target.host, target.port)),
                    ],
                );
                return Err(CallError::KeyMismatch {
                    host: target.name.clone(),
                });
            }
        }
        let body = body.map(json::to_string);
        let resp = client::exchange(
            stream,
            method,
            path,
            &target.host,
            body.as_deref().map(str::as_bytes),
            &self.limits,
            deadline,
        )
        .await
        .map_err(transport)?;
        Ok(Reply {
            status: resp.status,
            body: json::parse_object(&resp.body),
            rtt: Rtt(started.elapsed()),
        })
    }

    /// Refuses a peer whose serial or key is in the revocation list (or
    /// whose certificate cannot be read while the list is not empty); an
    /// unreadable list refuses every peer.
    async fn check_revoked(
        &self,
        target: &Target,
        peer: Option<&pki::CertInfo>,
    ) -> Result<(), CallError> {
        let path = self.revoked_path.clone();
        let refuse = |what: String| {
            log::warn(
                "agent-revoked",
                &[
                    ("AGENT", &target.name),
                    ("TARGET", &format!("{}:{}", target.host, target.port)),
                    ("WHAT", &what),
                ],
            );
            Err(CallError::Revoked {
                host: target.name.clone(),
                what,
            })
        };
        let list = {
            // Held while reading, so concurrent calls wait for one read.
            let mut cached = self.revoked.lock().await;
            match cached.as_ref() {
                Some((at, list)) if at.elapsed() < REVOKED_LIST_REUSE => list.clone(),
                _ => {
                    let display = path.display().to_string();
                    let read = self
                        .files
                        .run(move || RevokedAgents::load(&path))
                        .await
                        .map_err(|e| format!("cannot read {display}: {e}"));
                    let list = Arc::new(read);
                    *cached = Some((Instant::now(), list.clone()));
                    list
                }
            }
        };
        let list = match list.as_ref() {
            Ok(l) => l,
            Err(e) => return refuse(e.clone()),
        };
        if *list == RevokedAgents::default() {
            return Ok(());
        }
        let Some(info) = peer else {
            return refuse("certificate unreadable".into());
        };
        if list.serials.contains(&info.serial) {
            return refuse(format!("serial {}", info.serial));
        }
        if list.keys.contains(&info.spki_sha256) {
            return refuse(format!("key {}", info.spki_sha256));
        }
        Ok(())
    }

    /// Runs `each` for every target concurrently and returns the results in
    /// target order.
    pub async fn fan_out<T, F, Fut>(self: &Arc<Self>, targets: &[Target], each: F) -> Vec<T>
    where
        T: Send + 'static,
        F: Fn(Arc<Engine>, Target) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let tasks: Vec<_> = targets
            .iter()
            .map(|t| rt::spawn(each(self.clone(), t.clone())))
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_is_not_the_certificates_is_named_for_the_operator() {
        let (ca_cert, ca_key) = pki::create_ca(30).unwrap();
        let key = pki::generate_key_pem().unwrap();
        let csr = pki::check_csr(&pki::make_csr(&key, "dispatcher").unwrap(), None).unwrap();
        let cert = pki::sign_csr(&ca_cert, &ca_key, &csr, 30).unwrap();
        let ca = pki::pem_certs(&ca_cert).remove(0);
        let (_, serial) = client_config(&cert, &key, &ca).unwrap();
        assert_eq!(serial, pki::cert_info_pem(&cert).unwrap().serial);
        let other = pki::generate_key_pem().unwrap();
        let refusal = client_config(&cert, &other, &ca).err().unwrap();
        assert!(
            refusal.starts_with("the key does not belong to the certificate"),
            "{refusal}"
        );
    }
}
