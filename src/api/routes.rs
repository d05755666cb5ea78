//! API routes (reference surface.md 3.3): parse the body into a `proto`
//! type, call the one dispatch path, render. [`refusal`] is the one place a
//! [`DispatchError`] becomes an HTTP status and body.
//!
//! Every request except `GET /health` first passes the pre-route `api`
//! check; the token comes from the JSON body's `token`, or else from
//! `Authorization: Bearer`, so a token-checking hook can admit GET requests.
//! Endpoint checks follow. Refusals are 403 with the hook's reason and code
//! (or a bare `forbidden` under `auth_deny_generic`); `/status` answers a
//! refusal with the same 404 as an unknown reqid.

use std::net::IpAddr;

use miniserde::json::{Object, Value};

use crate::api::{openapi, Api};
use crate::control::auth::{self, Caller, Front};
use crate::control::dispatch::{DispatchError, RunOrder, RunOutcome};
use crate::hook::Verdict;
use crate::net::http::Request;
use crate::proto::json::{self, Builder, FieldError};
use crate::proto::{
    Credentials, DiscoveryBody, Endpoint, ErrorBody, Health, HostCapabilities, HostPing, HostRun,
    HostSubmit, Index, PingBody, ReadError, RunBody, TokenOnly,
};
use crate::{log, VERSION};

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

/// A status and a JSON body.
pub type Reply = (u16, Value);

/// What every handler knows about the request.
struct Ctx<'a> {
    api: &'a Api,
    req: &'a Request,
    peer: String,
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

    /// The caller, with the body's credentials; the token falls back to
    /// the bearer token.
    fn caller(&self, credentials: Credentials) -> Caller {
        let token = if credentials.token.is_empty() {
            self.bearer()
        } else {
            credentials.token
        };
        Caller {
            front: Front::Api,
            source_ip: self.peer.clone(),
            username: credentials.username,
            token,
            method: self.req.head.method.clone(),
            path: self.req.head.path().to_string(),
        }
    }

    /// The body, required.
    fn body(&self) -> Result<&[u8], Reply> {
        if self.req.body.is_empty() {
            return Err(bad_request("request body required"));
        }
        Ok(&self.req.body)
    }
}

fn bad_request(detail: &str) -> Reply {
    (400, ErrorBody::new("bad request", detail).to_json())
}

fn unreadable(e: ReadError) -> Reply {
    match e {
        ReadError::Field(e) => bad_field(e),
        ReadError::Json(e) => bad_request(&format!("invalid JSON body: {e}")),
    }
}

fn bad_field(e: FieldError) -> Reply {
    // Keep the original's wording for the checks it had.
    let detail = match e.field {
        "hosts" => "hosts must be a non-empty array".to_string(),
        "script" => "script name required (alphanumeric and hyphens only)".to_string(),
        _ => e.to_string(),
    };
    bad_request(&detail)
}

/// The API's rendering of a dispatch error.
fn refusal(api: &Api, e: DispatchError) -> Reply {
    let status = match &e {
        DispatchError::Denied { code, reason } => {
            let body = if api.dispatch.conf.auth_deny_generic {
                Builder::new()
                    .bool("ok", false)
                    .str("error", "forbidden")
                    .build()
            } else {
                Builder::new()
                    .bool("ok", false)
                    .str("error", reason)
                    .int("code", i64::from(*code))
                    .build()
            };
            return (403, body);
        }
        DispatchError::InvalidScript(_) => {
            return bad_request("script name required (alphanumeric and hyphens only)")
        }
        DispatchError::TooManyHosts { .. } => return bad_request(&e.to_string()),
        DispatchError::UnknownAgents(names) => {
            return (
                404,
                ErrorBody::new(
                    "unknown agent",
                    format!("not a registered agent: {}", names.join(", ")),
                )
                .to_json(),
            )
        }
        DispatchError::Locked(conflicts) => {
            let mut body = ErrorBody::new("locked", "");
            body.detail = None;
            body.code = Some(4);
            body.conflicts = conflicts.clone();
            return (409, body.to_json());
        }
        DispatchError::NotFound(reqid) => {
            let shown: String = reqid.chars().filter(char::is_ascii_alphanumeric).collect();
            return (
                404,
                ErrorBody::new("not found", format!("no result for reqid {shown}")).to_json(),
            );
        }
        DispatchError::Store(_) => {
            return (
                500,
                ErrorBody::new("server error", "cannot read result").to_json(),
            )
        }
        // Refused before any agent saw the run; a full disk is 507.
        DispatchError::Record { .. } => {
            let status = if e.out_of_space() { 507 } else { 500 };
            return (
                status,
                ErrorBody::new("cannot record run", e.to_string()).to_json(),
            );
        }
        DispatchError::Lock(_) | DispatchError::Registry(_) => 500,
    };
    (
        status,
        ErrorBody::new("server error", e.to_string()).to_json(),
    )
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
    let ctx = Ctx {
        api,
        req: &req,
        peer,
    };
    if let Some(allow) = allowed(&path).filter(|a| !a.split(", ").any(|m| m == method)) {
        return (
            405,
            ErrorBody::new(
                "method not allowed",
                format!("{method} is not allowed on {path} (allowed: {allow})"),
            )
            .to_json(),
        );
    }
    if (method.as_str(), path.as_str()) == ("GET", "/health") {
        let health = Health {
            ok: true,
            version: VERSION.to_string(),
        };
        return (200, health.to_json());
    }
    // The pre-route check sees only the token (body, else bearer); it is
    // all that is read of the body before the caller is admitted.
    let gate = ctx.caller(Credentials {
        username: String::new(),
        token: TokenOnly::read(&req.body).token,
    });
    if let Verdict::Deny { code, reason } =
        auth::authorise(&api.dispatch.conf, &gate, &gate.request("api")).await
    {
        return refusal(api, DispatchError::Denied { code, reason });
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/") => (200, index()),
        ("GET", "/openapi.json") => match json::parse(openapi::static_spec().as_bytes()) {
            Ok(spec) => (200, spec),
            Err(_) => (
                500,
                ErrorBody::new("server error", "cannot parse base spec").to_json(),
            ),
        },
        ("GET", "/openapi-live.json") => openapi::live(api).await,
        ("POST", "/ping") => ping(&ctx).await.unwrap_or_else(|r| r),
        ("POST", "/run") => run(&ctx).await.unwrap_or_else(|r| r),
        ("GET" | "POST", "/discovery") => discovery(&ctx).await.unwrap_or_else(|r| r),
        ("GET", p) if p.starts_with("/status/") => status(&ctx, &p["/status/".len()..])
            .await
            .unwrap_or_else(|r| r),
        _ => (
            404,
            ErrorBody::new("not found", format!("no route for {method} {path}")).to_json(),
        ),
    }
}

/// The methods declared for `path`, as an `Allow` header value; `None`
/// for a path the API does not have (404).
pub fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/" | "/health" | "/openapi.json" | "/openapi-live.json" => Some("GET"),
        "/ping" | "/run" => Some("POST"),
        "/discovery" => Some("GET, POST"),
        p if p.starts_with("/status/") => Some("GET"),
        _ => None,
    }
}

fn index() -> Value {
    Index {
        name: "ctrl-exec-api".into(),
        version: VERSION.into(),
        spec: "/openapi.json".into(),
        live_spec: "/openapi-live.json".into(),
        endpoints: ENDPOINTS
            .iter()
            .map(|(m, p)| Endpoint {
                method: m.to_string(),
                path: p.to_string(),
            })
            .collect(),
    }
    .to_json()
}

fn ok_with(fields: Builder) -> Value {
    fields.bool("ok", true).build()
}

async fn ping(ctx: &Ctx<'_>) -> Result<Reply, Reply> {
    let body = PingBody::read(ctx.body()?).map_err(unreadable)?;
    let caller = ctx.caller(body.credentials);
    let results = ctx
        .api
        .dispatch
        .ping(&caller, &body.hosts, None)
        .await
        .map_err(|e| refusal(ctx.api, e))?;
    let results = Value::Array(results.iter().map(HostPing::to_json).collect());
    Ok((200, ok_with(Builder::new().value("results", results))))
}

async fn run(ctx: &Ctx<'_>) -> Result<Reply, Reply> {
    let body = RunBody::read(ctx.body()?).map_err(unreadable)?;
    let caller = ctx.caller(body.credentials);
    let order = RunOrder {
        hosts: body.hosts,
        script: body.script,
        args: body.args,
        detach: body.detach,
        port: None,
        progress: None,
    };
    let outcome = ctx
        .api
        .dispatch
        .run(&caller, order)
        .await
        .map_err(|e| refusal(ctx.api, e))?;
    Ok(match outcome {
        RunOutcome::Ran { reqid, results } => {
            let results = Value::Array(results.iter().map(HostRun::to_json).collect());
            (
                200,
                ok_with(
                    Builder::new()
                        .str("reqid", reqid.as_str())
                        .value("results", results),
                ),
            )
        }
        RunOutcome::Submitted { reqid, results } => {
            let results = Value::Array(results.iter().map(HostSubmit::to_json).collect());
            (
                202,
                ok_with(
                    Builder::new()
                        .str("reqid", reqid.as_str())
                        .bool("async", true)
                        .value("results", results),
                ),
            )
        }
    })
}

async fn discovery(ctx: &Ctx<'_>) -> Result<Reply, Reply> {
    // A POST body is optional, but one that is there must be the object the
    // schema declares (a GET's body is ignored, as the original does).
    let posted = ctx.req.head.method == "POST" && !ctx.req.body.trim_ascii().is_empty();
    if posted && json::parse_object(&ctx.req.body).is_err() {
        return Err(bad_request("the request body must be a JSON object"));
    }
    let body = DiscoveryBody::read(&ctx.req.body).map_err(bad_field)?;
    let caller = ctx.caller(body.credentials);
    let caps = ctx
        .api
        .dispatch
        .discovery(&caller, body.hosts)
        .await
        .map_err(|e| refusal(ctx.api, e))?;
    let hosts: Object = caps
        .iter()
        .map(|c: &HostCapabilities| (c.label.host.clone(), c.to_json()))
        .collect();
    Ok((
        200,
        ok_with(Builder::new().value("hosts", Value::Object(hosts))),
    ))
}

async fn status(ctx: &Ctx<'_>, reqid: &str) -> Result<Reply, Reply> {
    let caller = ctx.caller(Credentials {
        username: String::new(),
        token: ctx.bearer(),
    });
    let record = ctx
        .api
        .dispatch
        .status(&caller, reqid, true)
        .await
        .map_err(|e| refusal(ctx.api, e))?;
    let mut body = record.to_json(false);
    body.insert("ok".into(), Value::Bool(true));
    Ok((200, Value::Object(body)))
}
