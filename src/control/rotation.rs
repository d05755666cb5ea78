//! Dispatcher-certificate rotation (protocol.md 6.5) and the serial
//! bookkeeping around it, driven by `ced rotate-cert`, `ced maintain` and a
//! running `ced pairing-mode`; the catch-up of agents that missed it runs on
//! every dispatch path.
//!
//! A rotation makes a new key and certificate signed by the CA, then
//! announces the new serial to every registered agent
//! (`POST /rotate-serial {"action":"add"}`, with the new certificate so the
//! agent can check it) over connections that present the **old**,
//! still-trusted certificate; only then does the new certificate become the
//! dispatcher's (the original switched first, so its announcement was
//! refused by every agent). The old pair is kept as `<cert>.previous` /
//! `<key>.previous` for `cert_overlap_days`: an agent that was down is
//! announced to with it the next time anything reaches it
//! ([`Dispatch::catch_up`], before the request meant for it). When the
//! overlap ends, agents still `pending` become `stale` (they must be paired
//! again, or given the new serial by hand) and the old serial is removed
//! from the `current` ones (`"action":"remove"`); the previous pair is then
//! deleted.
//!
//! The install survives a crash at any point: the previous pair is written
//! first, then the new pair as `<cert>.next` / `<key>.next`, then the
//! rotation state naming the new serial, then the live key and certificate;
//! [`recover`] finishes an install whose state names the `.next`
//! certificate and abandons one whose state does not. Rotations are
//! serialised by a lock on `<state_dir>/rotation.lock`.
//!
//! Registry records keep each agent's standing: `serial_status`
//! (`current`, `pending`, `stale`, `unknown`), `dispatcher_serial` (the
//! serial it confirmed), `serial_broadcast` and `serial_confirmed` (when it
//! was last announced to and when it confirmed, ISO-8601 UTC).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::conf::{DispatcherConf, DISPATCHER_COMMON_NAME};
use crate::control::dispatch::{log_call, status_reply, Dispatch};
use crate::control::engine::{CallError, Engine, Reply};
use crate::control::registry::{Registry, Target};
use crate::proto::json;
use crate::proto::{
    HostLabel, HostRotate, ReqId, RotateAction, RotateSerialReply, RotateSerialRequest,
    RotationRecord,
};
use crate::{fsx, log, pki, time};

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// Registry `serial_status` values.
pub const CURRENT: &str = "current";
/// Announced to, not confirmed yet.
pub const PENDING: &str = "pending";
/// Still pending when the overlap ended: needs pairing again.
pub const STALE: &str = "stale";
/// Nothing known (records the original or a hand wrote).
pub const UNKNOWN: &str = "unknown";

/// A registry record's status as shown: empty (older records) is `unknown`.
pub fn status_of(raw: &str) -> &str {
    match raw {
        CURRENT | PENDING | STALE => raw,
        _ => UNKNOWN,
    }
}

/// Reads the rotation state; `None` when no rotation was made. A file that
/// is not a valid record is an error (logged as `rotation-state-corrupt`).
pub fn load_state(conf: &DispatcherConf) -> Result<Option<RotationRecord>, String> {
    let path = &conf.rotation_file;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let parsed = json::parse_object(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|o| RotationRecord::from_json(&o).map_err(|e| e.to_string()));
    parsed.map(Some).map_err(|e| {
        log::error(
            "rotation-state-corrupt",
            &[
                ("ERROR", &e),
                ("PATH", &path.display().to_string()),
                ("REASON", "unreadable rotation state"),
            ],
        );
        format!("{}: {e}", path.display())
    })
}

/// Writes the rotation state atomically (mode 0644).
pub fn save_state(conf: &DispatcherConf, state: &RotationRecord) -> Result<(), String> {
    let path = &conf.rotation_file;
    let write = || {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsx::ensure_dir(dir, 0o750)?;
        }
        fsx::write_atomic(path, json::to_string(&state.to_json()).as_bytes(), 0o644)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether the state still has a previous serial that agents may trust
/// (rotated, not yet retired).
pub fn in_overlap(state: &RotationRecord) -> bool {
    state.previous_serial.is_some() && state.previous_retired.is_none()
}

/// Seconds left on the dispatcher certificate at `now`.
pub fn cert_seconds_left(conf: &DispatcherConf, now: i64) -> Result<i64, String> {
    let pem = std::fs::read_to_string(&conf.cert)
        .map_err(|e| format!("cannot read {}: {e}", conf.cert.display()))?;
    let info = pki::cert_info_pem(&pem).map_err(|e| format!("{}: {e}", conf.cert.display()))?;
    Ok(info.not_after - now)
}

/// Whether the dispatcher certificate is due for rotation: at most
/// `cert_renewal_days` left at `now`.
pub fn rotation_due(conf: &DispatcherConf, seconds_left: i64) -> bool {
    seconds_left <= i64::from(conf.cert_renewal_days) * DAY_SECS
}

/// Writes `bytes` atomically with `mode`, giving it the owner and group of
/// `like` when this process may (root): a rotated key stays readable by
/// the API's user.
fn write_like(path: &Path, bytes: &[u8], mode: u32, like: &Path) -> io::Result<()> {
    let owner = std::fs::metadata(like).ok();
    fsx::write_atomic(path, bytes, mode)?;
    if let Some(m) = owner {
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()))?;
        }
    }
    Ok(())
}

/// Finishes or abandons a rotation install that a crash interrupted (see
/// the module docs); `Some` says which. Call with the rotation lock held.
pub fn recover(conf: &DispatcherConf) -> Result<Option<String>, String> {
    let (next_cert, next_key) = (conf.next_cert_path(), conf.next_key_path());
    let (cert, key) = match (
        std::fs::read_to_string(&next_cert),
        std::fs::read_to_string(&next_key),
    ) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(_), Err(_)) => return Ok(None),
        _ => {
            let _ = std::fs::remove_file(&next_cert);
            let _ = std::fs::remove_file(&next_key);
            return Ok(Some(
                "removed half of an unfinished rotation install".into(),
            ));
        }
    };
    let next_serial = pki::cert_info_pem(&cert).map(|i| i.serial).ok();
    let committed = load_state(conf)?
        .is_some_and(|s| Some(s.current_serial.as_str()) == next_serial.as_deref());
    let note = if committed {
        write_like(&conf.key, key.as_bytes(), 0o600, &conf.key)
            .map_err(|e| format!("cannot write {}: {e}", conf.key.display()))?;
        write_like(&conf.cert, cert.as_bytes(), 0o644, &conf.cert)
            .map_err(|e| format!("cannot write {}: {e}", conf.cert.display()))?;
        "finished an interrupted rotation install"
    } else {
        "abandoned a rotation interrupted before it was recorded"
    };
    let _ = std::fs::remove_file(&next_cert);
    let _ = std::fs::remove_file(&next_key);
    log::warn("cert-rotation-recover", &[("MSG", note)]);
    Ok(Some(note.into()))
}

/// Takes the rotation lock and runs [`recover`] (blocking): what every
/// command that loads the dispatcher identity to rotate or maintain it does
/// first, so an interrupted install never leaves it unable to start.
pub fn recover_locked(conf: &DispatcherConf) -> Result<Option<String>, String> {
    let _lock = lock(conf)?;
    recover(conf)
}

/// Takes the rotation lock (blocking).
fn lock(conf: &DispatcherConf) -> Result<fsx::FileLock, String> {
    let path = conf.rotation_lock_path();
    if let Some(dir) = path.parent() {
        fsx::ensure_dir(dir, 0o750).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fsx::lock(&path, 0o640).map_err(|e| format!("cannot lock {}: {e}", path.display()))
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    /// The serial replaced.
    pub old_serial: String,
    /// The serial in use now.
    pub new_serial: String,
    /// When agents stop being announced to with the old certificate.
    pub overlap_expires: i64,
    /// The announcement, per agent.
    pub results: Vec<HostRotate>,
}

/// What retiring the previous serial did.
#[derive(Debug)]
pub struct Retired {
    /// The serial retired.
    pub serial: String,
    /// The removal, per `current` agent.
    pub results: Vec<HostRotate>,
}

/// Which certificate an announcement presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The current one.
    Current,
    /// The previous one (falls back to the current one when there is none).
    Previous,
}

/// One `/rotate-serial` to one agent; a success updates its registry
/// record (`add`: `current`, with the serial and the time it confirmed).
async fn send(
    eng: Arc<Engine>,
    registry: Registry,
    t: Target,
    via: Via,
    body: Arc<miniserde::json::Value>,
    action: RotateAction,
    serial: String,
) -> HostRotate {
    let reply: Result<Reply, CallError> = match via {
        // An agent that refuses the previous certificate may trust the
        // current one already (paired since, or given it by hand).
        Via::Previous => match eng
            .call_previous(&t, "POST", "/rotate-serial", Some(&body))
            .await
        {
            Some(Ok(r)) if r.status != 403 => Ok(r),
            Some(Err(e)) => Err(e),
            _ => eng.call(&t, "POST", "/rotate-serial", Some(&body)).await,
        },
        Via::Current => eng.call(&t, "POST", "/rotate-serial", Some(&body)).await,
    };
    log_call("rotate-serial", &t, "", action.as_str(), &reply);
    let (rtt, parsed) = status_reply(reply, RotateSerialReply::from_json);
    let reply = match parsed {
        Ok(RotateSerialReply::Done(d)) => Ok(d),
        Ok(RotateSerialReply::Error(e)) => Err(e),
        Err(e) => Err(e),
    };
    let now = time::iso8601(time::now());
    let (name, ok) = (t.name.clone(), reply.is_ok());
    let update = smol::unblock(move || {
        registry.update(&name, |r| match (action, ok) {
            (RotateAction::Add, true) => {
                r.dispatcher_serial = serial;
                r.serial_status = CURRENT.into();
                r.serial_broadcast = now.clone();
                r.serial_confirmed = now;
            }
            (RotateAction::Add, false) => r.serial_broadcast = now,
            (RotateAction::Remove, _) => {}
        })
    })
    .await;
    match (&reply, action) {
        (Ok(d), RotateAction::Add) => {
            log::info("serial-confirmed", &[("AGENT", &t.name)]);
            if !d.persisted {
                log::warn(
                    "serial-unsaved",
                    &[
                        ("AGENT", &t.name),
                        ("WARNING", d.warning.as_deref().unwrap_or("")),
                    ],
                );
            }
        }
        (Err(e), RotateAction::Add) => {
            log::warn("serial-broadcast-fail", &[("AGENT", &t.name), ("ERROR", e)]);
        }
        _ => {}
    }
    if let Err(e) = update {
        log::warn(
            "serial-broadcast",
            &[("AGENT", &t.name), ("ERROR", &e.to_string())],
        );
    }
    let reported = reply.as_ref().map(|d| d.host.clone()).unwrap_or_default();
    HostRotate {
        label: HostLabel::new(&t.name, &reported),
        rtt,
        reply,
    }
}

impl Dispatch {
    /// `/rotate-serial` with `action` and `serial` to every target at once.
    async fn rotate_serial_all(
        &self,
        targets: &[Target],
        via: Via,
        action: RotateAction,
        serial: &str,
        cert: Option<&str>,
        token: &str,
    ) -> Vec<HostRotate> {
        if targets.is_empty() {
            return Vec::new();
        }
        let body = Arc::new(
            RotateSerialRequest {
                serial: serial.to_string(),
                action: action.as_str().into(),
                token: token.to_string(),
                reqid: ReqId::random().into_string(),
                cert: cert.map(str::to_string),
            }
            .to_json(),
        );
        let (registry, serial) = (self.registry().clone(), serial.to_string());
        self.engine()
            .fan_out(targets, move |eng, t| {
                send(
                    eng,
                    registry.clone(),
                    t,
                    via,
                    body.clone(),
                    action,
                    serial.clone(),
                )
            })
            .await
    }

    /// Announces the current serial to the targets the registry shows
    /// `pending`, presenting the previous certificate, before anything else
    /// is sent to them. Does nothing outside a rotation's overlap (no
    /// previous certificate). Failures are logged only: the request that
    /// follows reports its own.
    pub async fn catch_up(&self, targets: &[Target], token: &str) {
        let pending: Vec<Target> = targets
            .iter()
            .filter(|t| t.serial_status == PENDING)
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        let ids = self.engine().fresh_identities().await;
        if ids.previous.is_none() {
            return;
        }
        let names: Vec<&str> = pending.iter().map(|t| t.name.as_str()).collect();
        log::info(
            "serial-catch-up",
            &[("HOSTS", &names.join(",")), ("SERIAL", &ids.serial)],
        );
        self.rotate_serial_all(
            &pending,
            Via::Previous,
            RotateAction::Add,
            &ids.serial,
            Some(&ids.cert_pem),
            token,
        )
        .await;
    }

    /// Every registered target, resolved.
    async fn all_targets(&self) -> Result<Vec<Target>, String> {
        let registry = self.registry().clone();
        smol::unblock(move || {
            let names = registry.names()?;
            crate::control::registry::resolve(&registry, &names, None).map_err(|e| match e {
                crate::control::registry::ResolveError::Registry(e) => e,
                crate::control::registry::ResolveError::Unknown(n) => {
                    crate::control::registry::RegistryError::NotFound(n.join(","))
                }
            })
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Announces the current serial to every agent the registry shows
    /// `pending` or `unknown` but those in `skip` (known down this run),
    /// presenting the previous certificate during an overlap, else the
    /// current one; one result per agent announced to.
    pub async fn broadcast_pending(
        &self,
        token: &str,
        skip: &[String],
    ) -> Result<Vec<HostRotate>, String> {
        let targets: Vec<Target> = self
            .all_targets()
            .await?
            .into_iter()
            .filter(|t| matches!(status_of(&t.serial_status), PENDING | UNKNOWN))
            .filter(|t| !skip.contains(&t.name))
            .collect();
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.engine().fresh_identities().await;
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        log::info(
            "serial-broadcast",
            &[
                ("DISPATCHER", &self.conf.dispatcher_id),
                ("HOSTS", &names.join(",")),
                ("SERIAL", &ids.serial),
            ],
        );
        Ok(self
            .rotate_serial_all(
                &targets,
                Via::Previous,
                RotateAction::Add,
                &ids.serial,
                Some(&ids.cert_pem),
                token,
            )
            .await)
    }

    /// Rotates the dispatcher certificate now (see the module docs).
    /// Refused while a previous rotation's serial is not retired: agents
    /// still pending on it could no longer be reached.
    pub async fn rotate(&self, token: &str) -> Result<Rotated, String> {
        let conf = self.conf.clone();
        let _lock = {
            let conf = conf.clone();
            smol::unblock(move || {
                let l = lock(&conf)?;
                recover(&conf)?;
                Ok::<_, String>(l)
            })
            .await?
        };
        self.engine()
            .reload_identities()
            .await
            .map_err(|e| e.to_string())?;
        if let Some(state) = load_state(&conf)? {
            if in_overlap(&state) {
                return Err(format!(
                    "the previous rotation is still in its overlap (serial {} trusted until {}); 'ctrl-exec-dispatcher maintain' retires it then (or set cert_overlap_days = 0 and run maintain now)",
                    state.previous_serial.as_deref().unwrap_or(""),
                    time::iso8601(state.overlap_expires)
                ));
            }
        }
        let old = self.engine().identities();
        let (old_key, new_cert, new_key, new_serial) = {
            let conf = conf.clone();
            smol::unblock(move || {
                let read = |p: &Path| {
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))
                };
                let (ca_cert, ca_key) = (read(&conf.ca_cert_path())?, read(&conf.ca_key_path())?);
                let old_key = read(&conf.key)?;
                let (new_cert, new_key) = pki::issue_key_and_cert(
                    &ca_cert,
                    &ca_key,
                    DISPATCHER_COMMON_NAME,
                    conf.dispatcher_cert_days,
                )
                .map_err(|e| format!("cannot issue the new certificate: {e}"))?;
                let serial = pki::cert_info_pem(&new_cert)
                    .map_err(|e| e.to_string())?
                    .serial;
                Ok::<_, String>((old_key, new_cert, new_key, serial))
            })
            .await?
        };
        log::info(
            "cert-renewal-start",
            &[("NEW_SERIAL", &new_serial), ("OLD_SERIAL", &old.serial)],
        );
        let targets = self.all_targets().await?;
        {
            let registry = self.registry().clone();
            let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
            smol::unblock(move || {
                for n in names {
                    let _ = registry.update(&n, |r| r.serial_status = PENDING.into());
                }
            })
            .await;
        }
        // The old certificate is still the one in use: the announcement
        // reaches agents that trust only it.
        let results = self
            .rotate_serial_all(
                &targets,
                Via::Current,
                RotateAction::Add,
                &new_serial,
                Some(&new_cert),
                token,
            )
            .await;
        let now = time::now();
        let state = RotationRecord {
            current_serial: new_serial.clone(),
            previous_serial: Some(old.serial.clone()),
            rotated_at: now,
            overlap_expires: now + i64::from(conf.cert_overlap_days) * DAY_SECS,
            overlap_days: conf.cert_overlap_days,
            previous_retired: None,
        };
        let old_cert = old.cert_pem.clone();
        let install_state = state.clone();
        smol::unblock(move || {
            install(
                &conf,
                &old_cert,
                &old_key,
                &new_cert,
                &new_key,
                &install_state,
            )
        })
        .await
        .inspect_err(|e| log::error("cert-rotation-fail", &[("ERROR", e)]))?;
        self.engine()
            .reload_identities()
            .await
            .map_err(|e| e.to_string())?;
        log::info(
            "cert-rotated",
            &[
                ("AGENTS", &targets.len().to_string()),
                ("NEW_SERIAL", &new_serial),
                ("OLD_SERIAL", &old.serial),
                ("OVERLAP_EXPIRES", &time::iso8601(state.overlap_expires)),
            ],
        );
        Ok(Rotated {
            old_serial: old.serial.clone(),
            new_serial,
            overlap_expires: state.overlap_expires,
            results,
        })
    }

    /// After the overlap: agents still `pending` become `stale`; returns
    /// their names. Nothing to do outside an ended overlap.
    pub async fn expire_stale(&self) -> Result<Vec<String>, String> {
        let Some(state) = load_state(&self.conf)? else {
            return Ok(Vec::new());
        };
        if !in_overlap(&state) || time::now() < state.overlap_expires {
            return Ok(Vec::new());
        }
        let registry = self.registry().clone();
        let stale = smol::unblock(move || {
            let mut stale = Vec::new();
            for a in registry.list()? {
                if a.serial_status == PENDING {
                    registry.update(&a.hostname, |r| r.serial_status = STALE.into())?;
                    stale.push(a.hostname);
                }
            }
            Ok::<_, crate::control::registry::RegistryError>(stale)
        })
        .await
        .map_err(|e| e.to_string())?;
        for name in &stale {
            log::warn(
                "serial-stale",
                &[("AGENT", name), ("REASON", "overlap-expired")],
            );
        }
        Ok(stale)
    }

    /// After the overlap: removes the previous serial from every `current`
    /// agent, records it retired and deletes the previous key and
    /// certificate. Runs once per rotation; an agent that does not answer
    /// keeps an entry for a key that no longer exists.
    pub async fn retire_previous(&self, token: &str) -> Result<Option<Retired>, String> {
        let conf = self.conf.clone();
        let _lock = {
            let conf = conf.clone();
            smol::unblock(move || lock(&conf)).await?
        };
        let Some(mut state) = load_state(&conf)? else {
            return Ok(None);
        };
        let Some(previous) = state.previous_serial.clone().filter(|_| in_overlap(&state)) else {
            return Ok(None);
        };
        if time::now() < state.overlap_expires {
            return Ok(None);
        }
        let targets: Vec<Target> = self
            .all_targets()
            .await?
            .into_iter()
            .filter(|t| t.serial_status == CURRENT)
            .collect();
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        log::info(
            "serial-retire",
            &[("HOSTS", &names.join(",")), ("SERIAL", &previous)],
        );
        let results = self
            .rotate_serial_all(
                &targets,
                Via::Current,
                RotateAction::Remove,
                &previous,
                None,
                token,
            )
            .await;
        state.previous_serial = None;
        state.previous_retired = Some(time::now());
        save_state(&conf, &state)?;
        for p in [conf.previous_key_path(), conf.previous_cert_path()] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    log::warn(
                        "serial-retire",
                        &[("ERROR", &format!("cannot remove {}: {e}", p.display()))],
                    );
                }
            }
        }
        self.engine()
            .reload_identities()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(Retired {
            serial: previous,
            results,
        }))
    }
}

/// Writes the previous pair, the next pair, the state, then the live key
/// and certificate, and removes the next pair (see [`recover`]).
fn install(
    conf: &DispatcherConf,
    old_cert: &str,
    old_key: &str,
    new_cert: &str,
    new_key: &str,
    state: &RotationRecord,
) -> Result<(), String> {
    let w = |path: &Path, bytes: &str, mode: u32, like: &Path| {
        write_like(path, bytes.as_bytes(), mode, like)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    w(&conf.previous_cert_path(), old_cert, 0o644, &conf.cert)?;
    w(&conf.previous_key_path(), old_key, 0o600, &conf.key)?;
    w(&conf.next_cert_path(), new_cert, 0o644, &conf.cert)?;
    w(&conf.next_key_path(), new_key, 0o600, &conf.key)?;
    save_state(conf, state)?;
    w(&conf.key, new_key, 0o600, &conf.key)?;
    w(&conf.cert, new_cert, 0o644, &conf.cert)?;
    let _ = std::fs::remove_file(conf.next_cert_path());
    let _ = std::fs::remove_file(conf.next_key_path());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_shown() {
        assert_eq!(status_of("current"), CURRENT);
        assert_eq!(status_of("pending"), PENDING);
        assert_eq!(status_of("stale"), STALE);
        assert_eq!(status_of(""), UNKNOWN);
        assert_eq!(status_of("weird"), UNKNOWN);
    }
}
