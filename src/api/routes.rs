//! API routes (reference surface.md 3.3): authorise, validate, act, answer.
//!
//! Every request except `GET /health` first passes the pre-route `api`
//! check; the token comes from the JSON body's `token`, or else from
//! `Authorization: Bearer`, so a token-checking hook can admit GET requests.
//! Endpoint checks follow. Refusals are 403 with the hook's reason and code
//! (or a bare `forbidden` under `auth_deny_generic`); `/status` answers a
//! refusal with the same 404 as an unknown reqid.

use std::net::IpAddr;

use crate::api::{error_body, openapi, Api};
use crate::control::auth::{self, Caller};
use crate::control::engine::MAX_HOSTS;
use crate::control::locks::Locks;
use crate::control::ops;
use crate::control::registry::{self, Registry, ResolveError, Target};
use crate::control::runstore::{self, RunStore};
use crate::hook::{Submitter, Verdict};
use crate::json::{self, Object, Value};
use crate::net::http::Request;
use crate::{conf, log, pki, time, VERSION};

/// The routes listed by `GET /`.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("POST", "/ping"),
    ("POST", "/run"),
    ("GET", "/discovery"),
    ("POST", "/discovery"),
    ("GET", "/status/{reqid}"),
    ("GET", "/openapi.json"),
    ("GET", "/openapi-live.json"),
];

type Reply = (u16, Value);

/// What every handler knows about the request.
struct Ctx<'a> {
    api: &'a Api,
    req: &'a Request,
    peer: String,
    body: Option<Object>,
}

impl Ctx<'_> {
    fn bearer(&self) -> String {
        self.req
            .head
            .header("authorization")
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    fn body_str(&self, key: &str) -> String {
        self.body
            .as_ref()
            .and_then(|b| json::get_str(b, key))
            .unwrap_or("")
            .to_string()
    }

    /// Body token first, then the bearer token.
    fn token(&self) -> String {
        let t = self.body_str("token");
        if t.is_empty() {
            self.bearer()
        } else {
            t
        }
    }

    async fn check(&self, mut r: crate::hook::Request) -> Result<(), Reply> {
        r.method = self.req.head.method.clone();
        r.path = self.req.head.path().to_string();
        match auth::authorise(&self.api.conf, Caller::Api, &r).await {
            Verdict::Allow => Ok(()),
            Verdict::Deny { code, reason } => Err(forbidden(self.api, code, &reason)),
        }
    }
}

fn forbidden(api: &Api, code: i32, reason: &str) -> Reply {
    if api.conf.auth_deny_generic {
        return (
            403,
            json::object([
                ("ok", Value::Bool(false)),
                ("error", json::str("forbidden")),
            ]),
        );
    }
    (
        403,
        json::object([
            ("ok", Value::Bool(false)),
            ("error", json::str(reason)),
            ("code", json::int(code as i64)),
        ]),
    )
}

fn bad_request(detail: &str) -> Reply {
    (400, error_body("bad request", Some(detail)))
}

/// Routes one request.
pub async fn handle(api: &Api, req: Request, ip: IpAddr) -> Reply {
    let peer = ip.to_string();
    let method = req.head.method.clone();
    let path = req.head.path().to_string();
    log::info(
        "api-request",
        &[
            ("LEN", &req.body.len().to_string()),
            ("METHOD", &method),
            ("PATH", &path),
            ("PEER", &peer),
        ],
    );
    let body = if req.body.first() == Some(&b'{') {
        json::parse_object(&req.body)
    } else {
        None
    };
    let ctx = Ctx {
        api,
        req: &req,
        peer,
        body,
    };
    if (method.as_str(), path.as_str()) == ("GET", "/health") {
        return (
            200,
            json::object([("ok", Value::Bool(true)), ("version", json::str(VERSION))]),
        );
    }
    if let Err(denied) = ctx
        .check(auth::request("api", &ctx.peer, "", &ctx.token()))
        .await
    {
        return denied;
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/") => (200, index()),
        ("GET", "/openapi.json") => match json::parse(openapi::static_spec().as_bytes()) {
            Some(spec) => (200, spec),
            None => (
                500,
                error_body("server error", Some("cannot parse base spec")),
            ),
        },
        ("GET", "/openapi-live.json") => openapi::live(api).await,
        ("POST", "/ping") => ping(&ctx).await,
        ("POST", "/run") => run(&ctx).await,
        ("GET" | "POST", "/discovery") => discovery(&ctx).await,
        ("GET", p) if p.starts_with("/status/") => status(&ctx, &p["/status/".len()..]).await,
        _ => (
            404,
            error_body("not found", Some(&format!("no route for {method} {path}"))),
        ),
    }
}

fn index() -> Value {
    let endpoints: Vec<Value> = ENDPOINTS
        .iter()
        .map(|(m, p)| json::object([("method", json::str(*m)), ("path", json::str(*p))]))
        .collect();
    json::object([
        ("name", json::str("ctrl-exec-api")),
        ("version", json::str(VERSION)),
        ("spec", json::str("/openapi.json")),
        ("live_spec", json::str("/openapi-live.json")),
        ("endpoints", Value::Array(endpoints.into_iter().collect())),
    ])
}

/// Validates the body of `/ping` and `/run`: present, an object, with a
/// non-empty `hosts` array of strings.
fn hosts_from_body(ctx: &Ctx<'_>) -> Result<Vec<String>, Reply> {
    if ctx.req.body.is_empty() {
        return Err(bad_request("request body required"));
    }
    let Some(body) = &ctx.body else {
        return Err(bad_request("invalid JSON body"));
    };
    match json::get_str_array(body, "hosts") {
        Ok(h) if !h.is_empty() => {
            if h.len() > MAX_HOSTS {
                return Err(bad_request(&format!("too many hosts (max {MAX_HOSTS})")));
            }
            Ok(h)
        }
        _ => Err(bad_request("hosts must be a non-empty array")),
    }
}

fn resolve(api: &Api, hosts: &[String]) -> Result<Vec<Target>, Reply> {
    registry::resolve(&Registry::new(&api.conf.registry_dir), hosts, None).map_err(|e| match e {
        ResolveError::Unknown(names) => (
            404,
            error_body(
                "unknown agent",
                Some(&format!("not a registered agent: {}", names.join(", "))),
            ),
        ),
        ResolveError::Registry(e) => (500, error_body("server error", Some(&e.to_string()))),
    })
}

/// The `ping` authorisation shared by `/ping` and `/discovery`, then host
/// resolution.
async fn ping_targets(ctx: &Ctx<'_>, hosts: &[String]) -> Result<Vec<Target>, Reply> {
    let mut r = auth::request("ping", &ctx.peer, &ctx.body_str("username"), &ctx.token());
    r.hosts = hosts.to_vec();
    ctx.check(r).await?;
    resolve(ctx.api, hosts)
}

fn ok_with(fields: Vec<(&str, Value)>) -> Value {
    let mut o = Object::new();
    o.insert("ok".into(), Value::Bool(true));
    for (k, v) in fields {
        o.insert(k.into(), v);
    }
    Value::Object(o)
}

async fn ping(ctx: &Ctx<'_>) -> Reply {
    let hosts = match hosts_from_body(ctx) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let targets = match ping_targets(ctx, &hosts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let results = ops::ping(&ctx.api.engine, &targets, &pki::random_hex(8)).await;
    (
        200,
        ok_with(vec![(
            "results",
            Value::Array(results.into_iter().collect()),
        )]),
    )
}

async fn run(ctx: &Ctx<'_>) -> Reply {
    let hosts = match hosts_from_body(ctx) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Some(body) = &ctx.body else {
        return bad_request("invalid JSON body");
    };
    let script = ctx.body_str("script");
    if !conf::valid_script_name(&script) {
        return bad_request("script name required (alphanumeric and hyphens only)");
    }
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(_)) => match json::get_str_array(body, "args") {
            Ok(a) => a,
            Err(()) => return bad_request("args must be an array of strings"),
        },
        Some(_) => return bad_request("args must be an array"),
    };
    let detach = json::truthy(body, "async");
    let username = ctx.body_str("username");
    let token = ctx.token();
    let mut r = auth::request("run", &ctx.peer, &username, &token);
    r.script = script.clone();
    r.hosts = hosts.clone();
    r.args = args.clone();
    if let Err(denied) = ctx.check(r).await {
        return denied;
    }
    let targets = match resolve(ctx.api, &hosts) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let held = match Locks::new(&ctx.api.conf.locks_dir()).acquire(&names, &script) {
        Ok(h) => h,
        Err(conflicts) => {
            log::warn("lock-conflict", &[("CONFLICTS", &conflicts.join(","))]);
            return (
                409,
                json::object([
                    ("ok", Value::Bool(false)),
                    ("error", json::str("locked")),
                    ("code", json::int(4)),
                    ("conflicts", json::str_array(&conflicts)),
                ]),
            );
        }
    };
    let reqid = pki::random_hex(8);
    log::info(
        "dispatch",
        &[
            ("HOSTS", &names.join(",")),
            ("MODE", if detach { "async" } else { "sync" }),
            ("REQID", &reqid),
            ("SCRIPT", &script),
        ],
    );
    let results = ops::run(
        &ctx.api.engine,
        &targets,
        &script,
        &args,
        &reqid,
        &username,
        &token,
        detach,
    )
    .await;
    drop(held);
    let submitter = Some(json::object([
        ("username", json::str(&username)),
        ("source_ip", json::str(&ctx.peer)),
    ]));
    let record = if detach {
        runstore::async_record(&reqid, &script, &results, submitter, time::now())
    } else {
        runstore::sync_record(&reqid, &script, &hosts, &results, submitter, time::now())
    };
    if let Err(e) = RunStore::new(&ctx.api.conf.runs_dir()).save(&reqid, &record) {
        log::warn(
            "run-store-fail",
            &[("ERROR", &e.to_string()), ("REQID", &reqid)],
        );
    }
    let results = Value::Array(results.into_iter().collect());
    if detach {
        (
            202,
            ok_with(vec![
                ("reqid", json::str(&reqid)),
                ("async", Value::Bool(true)),
                ("results", results),
            ]),
        )
    } else {
        (
            200,
            ok_with(vec![("reqid", json::str(&reqid)), ("results", results)]),
        )
    }
}

async fn discovery(ctx: &Ctx<'_>) -> Reply {
    let registry = Registry::new(&ctx.api.conf.registry_dir);
    let requested = ctx
        .body
        .as_ref()
        .and_then(|b| json::get_str_array(b, "hosts").ok())
        .unwrap_or_default();
    let hosts = if requested.is_empty() {
        match registry.names() {
            Ok(n) => n,
            Err(e) => return (500, error_body("server error", Some(&e.to_string()))),
        }
    } else {
        requested
    };
    if hosts.is_empty() {
        return (200, ok_with(vec![("hosts", Value::Object(Object::new()))]));
    }
    let targets = match ping_targets(ctx, &hosts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let caps = ops::capabilities(&ctx.api.engine, &targets).await;
    registry::refresh_tags(&registry, &caps);
    let map: Object = caps.into_iter().collect();
    (200, ok_with(vec![("hosts", Value::Object(map))]))
}

async fn status(ctx: &Ctx<'_>, reqid: &str) -> Reply {
    let not_found = (
        404,
        error_body(
            "not found",
            Some(&format!("no result for reqid {}", sanitize(reqid))),
        ),
    );
    if reqid.is_empty()
        || reqid.len() > 64
        || !reqid
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return not_found;
    }
    let store = RunStore::new(&ctx.api.conf.runs_dir());
    store.purge();
    let mut rec = match store.load(reqid) {
        Ok(Some(r)) => r,
        Ok(None) => return not_found,
        Err(_) => return (500, error_body("server error", Some("cannot read result"))),
    };
    let submitter = match rec.get("submitter") {
        Some(Value::Object(s)) => Some(Submitter {
            username: json::get_str(s, "username").unwrap_or("").to_string(),
            source_ip: json::get_str(s, "source_ip").unwrap_or("").to_string(),
        }),
        _ => None,
    };
    let mut r = auth::request("status", &ctx.peer, "", &ctx.bearer());
    r.reqid = reqid.to_string();
    r.submitter = submitter;
    if ctx.check(r).await.is_err() {
        return not_found;
    }
    if runstore::is_async(&rec) {
        runstore::refresh(
            &ctx.api.engine,
            &Registry::new(&ctx.api.conf.registry_dir),
            reqid,
            &mut rec,
        )
        .await;
        if let Err(e) = store.save(reqid, &rec) {
            log::warn(
                "run-store-fail",
                &[("ERROR", &e.to_string()), ("REQID", reqid)],
            );
        }
    }
    rec.remove("submitter");
    rec.insert("ok".into(), Value::Bool(true));
    (200, Value::Object(rec))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .take(64)
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}
