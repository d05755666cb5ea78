//! The OpenAPI documents: the static one embedded in the binary, and the
//! live one generated per request from the registry and agent discovery.

use std::collections::BTreeMap;

use crate::api::Api;
use miniserde::json::{Object, Value};

use crate::proto::json;
use crate::proto::ErrorBody;
use crate::{time, VERSION};

/// Script variants by schema_version ("" for none): (hosts, schema).
type Variants = BTreeMap<String, (Vec<String>, Option<Value>)>;

const SPEC: &str = include_str!("openapi.json");

/// The static document with the release version filled in.
pub fn static_spec() -> String {
    SPEC.replace("@VERSION@", VERSION)
}

/// `GET /openapi-live.json`: the static document plus host and script enums
/// and `x-ctrl-exec-scripts`, from live discovery of every registered agent.
pub async fn live(api: &Api) -> (u16, Value) {
    let Ok(Value::Object(mut spec)) = json::parse(static_spec().as_bytes()) else {
        return (
            500,
            ErrorBody::new("server error", "cannot parse base spec").to_json(),
        );
    };
    let (names, caps) = match api.dispatch.survey().await {
        Ok(found) => found,
        Err(e) => return (500, ErrorBody::new("server error", e.to_string()).to_json()),
    };
    // script name -> schema_version (or "") -> (hosts, schema)
    let mut scripts: BTreeMap<String, Variants> = BTreeMap::new();
    for c in &caps {
        let Ok(live) = &c.reply else { continue };
        for s in &live.scripts {
            let entry = scripts
                .entry(s.name.clone())
                .or_default()
                .entry(s.schema_version.clone().unwrap_or_default())
                .or_insert((Vec::new(), None));
            entry.0.push(c.label.host.clone());
            if entry.1.is_none() {
                entry.1 = s.schema.clone();
            }
        }
    }
    let host_enum = json::strings(&names);
    if let Some(Value::Object(components)) = spec.get_mut("components") {
        if let Some(Value::Object(schemas)) = components.get_mut("schemas") {
            // With no agent registered there is no enum: `enum` must be a
            // non-empty array, and the static schema already says "string".
            for schema in ["PingRequest", "RunRequest", "DiscoveryRequest"] {
                if !names.is_empty() {
                    set_hosts_enum(schemas.get_mut(schema), &host_enum);
                }
            }
            if !scripts.is_empty() {
                let names: Vec<String> = scripts.keys().cloned().collect();
                if let Some(Value::Object(run)) = schemas.get_mut("RunRequest") {
                    if let Some(Value::Object(props)) = run.get_mut("properties") {
                        if let Some(Value::Object(script)) = props.get_mut("script") {
                            script.insert("enum".into(), json::strings(&names));
                        }
                    }
                }
            }
        }
    }
    if !scripts.is_empty() {
        let mut x = Object::new();
        for (name, versions) in scripts {
            let variants: Vec<Value> = versions
                .into_iter()
                .map(|(version, (mut hosts, schema))| {
                    hosts.sort();
                    let mut v = Object::new();
                    v.insert("hosts".into(), json::strings(&hosts));
                    if !version.is_empty() {
                        v.insert("schema_version".into(), json::string(version));
                    }
                    if let Some(s) = schema {
                        v.insert("schema".into(), s);
                    }
                    Value::Object(v)
                })
                .collect();
            x.insert(name, Value::Array(variants.into_iter().collect()));
        }
        spec.insert("x-ctrl-exec-scripts".into(), Value::Object(x));
    }
    if let Some(Value::Object(info)) = spec.get_mut("info") {
        let base = VERSION.split('+').next().unwrap_or(VERSION);
        info.insert(
            "version".into(),
            json::string(format!("{base}+{}", time::now())),
        );
    }
    (200, Value::Object(spec))
}

fn set_hosts_enum(schema: Option<&mut Value>, hosts: &Value) {
    let Some(Value::Object(schema)) = schema else {
        return;
    };
    let Some(Value::Object(props)) = schema.get_mut("properties") else {
        return;
    };
    let Some(Value::Object(h)) = props.get_mut("hosts") else {
        return;
    };
    let Some(Value::Object(items)) = h.get_mut("items") else {
        return;
    };
    items.insert("enum".into(), hosts.clone());
}
