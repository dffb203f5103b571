//! The management API, `/admin/api/…`: JSON over the admin listener, for the CLI verbs, the
//! web console and scripts. Every route is in [`ROUTES`], which docs/openapi.json must match
//! (tests/admin_api.rs checks both ways).
//!
//! Callers are admin credentials (`Authorization: Bearer`, compared in constant time with every
//! configured one) or console sessions (cookie + `x-csrf-token` on every change). A read-scope
//! caller may only read. Changes need `If-Match` and answer the new `ETag`; errors are
//! `{"error":{"code","message"}}` with a stable code.

use std::sync::Arc;

use http::Response;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{read_body, reply};
use crate::config::{AdminCredential, AdminScope};
use crate::manage::{
    Changed, ListQuery, ManageError, Manager, NewToken, PermissionPatch, PermissionSpec, Target,
    TokenPatch,
};

/// (method, path pattern, scope, summary): `{jti}` and `{id}` are path parameters.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    (
        "GET",
        "/admin/api/whoami",
        "read",
        "The caller: credential name, scope, whether the policy source is writable",
    ),
    (
        "GET",
        "/admin/api/endpoints",
        "read",
        "The endpoints with their full URLs and kinds",
    ),
    (
        "GET",
        "/admin/api/stages",
        "read",
        "Stages, locales, models and actions to choose from, and the default public stage",
    ),
    (
        "PUT",
        "/admin/api/stages/default",
        "write",
        "Set the default stage of public content delivery",
    ),
    (
        "GET",
        "/admin/api/public/permissions",
        "read",
        "Public content permissions (filter, sort)",
    ),
    (
        "POST",
        "/admin/api/public/permissions",
        "write",
        "Add a public content permission",
    ),
    (
        "PATCH",
        "/admin/api/public/permissions/{id}",
        "write",
        "Change a public permission's models, locales or stages",
    ),
    (
        "DELETE",
        "/admin/api/public/permissions/{id}",
        "write",
        "Delete a public permission",
    ),
    (
        "GET",
        "/admin/api/tokens",
        "read",
        "Permanent Auth Tokens (never their strings)",
    ),
    (
        "POST",
        "/admin/api/tokens",
        "write",
        "Add a token; answers its string once",
    ),
    ("GET", "/admin/api/tokens/{jti}", "read", "One token"),
    (
        "PATCH",
        "/admin/api/tokens/{jti}",
        "write",
        "Change a token's name, description or default stage",
    ),
    (
        "DELETE",
        "/admin/api/tokens/{jti}",
        "write",
        "Delete a token and revoke its jti",
    ),
    (
        "POST",
        "/admin/api/tokens/{jti}/reissue",
        "write",
        "Mint a fresh string for the same jti",
    ),
    (
        "POST",
        "/admin/api/tokens/{jti}/revoke",
        "write",
        "Revoke the jti, keep the entry",
    ),
    (
        "GET",
        "/admin/api/tokens/{jti}/permissions",
        "read",
        "A token's content permissions (filter, sort)",
    ),
    (
        "POST",
        "/admin/api/tokens/{jti}/permissions",
        "write",
        "Add a content permission to a token",
    ),
    (
        "PATCH",
        "/admin/api/tokens/{jti}/permissions/{id}",
        "write",
        "Change a token's permission",
    ),
    (
        "DELETE",
        "/admin/api/tokens/{jti}/permissions/{id}",
        "write",
        "Delete a token's permission",
    ),
    (
        "GET",
        "/admin/api/tokens/{jti}/management",
        "read",
        "Every management permission, with whether the token has it",
    ),
    (
        "PATCH",
        "/admin/api/tokens/{jti}/management",
        "write",
        "Enable and disable management permissions",
    ),
    (
        "POST",
        "/admin/api/token-check",
        "read",
        "Decode and verify a pasted token string, say which token it is",
    ),
];

/// Who is calling.
#[derive(Clone)]
pub struct Caller {
    pub name: String,
    pub scope: AdminScope,
    /// The console session's CSRF token (bearer callers have none and need none).
    pub csrf: Option<String>,
}

/// The credential a bearer value is, compared in constant time with every configured one.
pub fn credential<'a>(
    creds: &'a [AdminCredential],
    presented: &str,
) -> Option<&'a AdminCredential> {
    let mut found = None;
    for c in creds {
        if c.secret.as_bytes().ct_eq(presented.as_bytes()).unwrap_u8() == 1 {
            found = Some(c);
        }
    }
    found
}

pub fn bearer(session: &ServerSession) -> Option<String> {
    session
        .req_header()
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim().to_string())
        })
}

pub fn error_reply(e: &ManageError) -> Response<Vec<u8>> {
    let mut r = reply(
        e.status,
        "application/json",
        json!({ "error": { "code": e.code, "message": e.message } })
            .to_string()
            .into_bytes(),
    );
    if e.status == 401 {
        r.headers_mut().insert(
            "www-authenticate",
            http::HeaderValue::from_static("Bearer realm=\"contentgate admin\""),
        );
    }
    r
}

fn ok(status: u16, mut body: Value, etag: Option<&str>) -> Response<Vec<u8>> {
    if let (Some(e), Value::Object(o)) = (etag, &mut body) {
        o.entry("etag").or_insert(json!(e));
    }
    let mut r = reply(status, "application/json", body.to_string().into_bytes());
    if let Some(e) = etag {
        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{e}\"")) {
            r.headers_mut().insert("etag", v);
        }
    }
    r
}

fn changed(status: u16, c: Changed) -> Response<Vec<u8>> {
    ok(status, c.body, Some(&c.etag))
}

/// The route a request is, with its parameters: (index in ROUTES, jti, id).
fn route(method: &str, path: &str) -> Result<(usize, Option<String>, Option<usize>), ManageError> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut path_known = false;
    for (i, (m, pattern, _, _)) in ROUTES.iter().enumerate() {
        let pat: Vec<&str> = pattern.split('/').collect();
        if pat.len() != segs.len() {
            continue;
        }
        let mut jti = None;
        let mut id = None;
        let mut matched = true;
        for (p, s) in pat.iter().zip(&segs) {
            match *p {
                "{jti}" => {
                    let j = percent_decode(s);
                    if j.is_empty() || j.len() > 256 {
                        matched = false;
                        break;
                    }
                    jti = Some(j)
                }
                "{id}" => match s.parse::<usize>() {
                    Ok(n) => id = Some(n),
                    Err(_) => {
                        matched = false;
                        break;
                    }
                },
                lit if lit == *s => {}
                _ => {
                    matched = false;
                    break;
                }
            }
        }
        if matched {
            path_known = true;
            if *m == method {
                return Ok((i, jti, id));
            }
        }
    }
    if path_known {
        Err(ManageError::new(
            405,
            "METHOD_NOT_ALLOWED",
            format!("{method} is not allowed on {path}"),
        ))
    } else {
        Err(ManageError::not_found(format!(
            "no management API route {path}"
        )))
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

fn body_json(body: &[u8]) -> Result<Value, ManageError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ManageError::bad_request(format!("body is not JSON: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ManageError> {
    serde_json::from_value(v).map_err(|e| ManageError::bad_request(e.to_string()))
}

/// Everything a handler needs, owned, to run on the blocking pool.
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub if_match: Option<String>,
    pub body: Vec<u8>,
    pub caller: Caller,
    pub endpoints: Value,
}

impl Call {
    /// Reads what the handler needs from the session (the body within the admin limits).
    pub async fn read(
        session: &mut ServerSession,
        caller: Caller,
        endpoints: Value,
    ) -> Result<Call, ManageError> {
        let h = session.req_header();
        let method = h.method.as_str().to_string();
        let path = h.uri.path().to_string();
        let query = h.uri.query().unwrap_or("").to_string();
        let if_match = h
            .headers
            .get("if-match")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = if method == "GET" {
            Vec::new()
        } else {
            read_body(session).await.ok_or_else(|| {
                ManageError::new(
                    413,
                    "TOO_LARGE",
                    "body larger than 1 MiB or slower than 10 s",
                )
            })?
        };
        Ok(Call {
            method,
            path,
            query,
            if_match,
            body,
            caller,
            endpoints,
        })
    }
}

/// The operation class a request counts under (`contentgate_admin_api_requests_total`).
pub fn op_class(method: &str) -> &'static str {
    if method == "GET" {
        "read"
    } else {
        "write"
    }
}

/// Runs one call (blocking: file IO, Redis, the compile).
pub fn handle(manager: &Arc<Manager>, call: Call) -> Result<Response<Vec<u8>>, ManageError> {
    let (i, jti, id) = route(&call.method, &call.path)?;
    let (_, pattern, scope, _) = ROUTES[i];
    if scope == "write" && call.caller.scope < AdminScope::Write {
        return Err(ManageError::new(
            403,
            "FORBIDDEN",
            format!(
                "credential {:?} has the read scope; this change needs write",
                call.caller.name
            ),
        ));
    }
    let who = call.caller.name.as_str();
    let if_match = call.if_match.as_deref();
    let jti_ref = || {
        jti.clone()
            .ok_or_else(|| ManageError::bad_request("missing jti"))
    };
    let id_ref = || id.ok_or_else(|| ManageError::bad_request("missing id"));
    let target = || -> Result<Target, ManageError> {
        Ok(if pattern.starts_with("/admin/api/public") {
            Target::Public
        } else {
            Target::Token(jti_ref()?)
        })
    };
    let body = || body_json(&call.body);
    Ok(match (call.method.as_str(), pattern) {
        ("GET", "/admin/api/whoami") => {
            // The policy's current ETag too: a script that only needs to change something gets
            // it here, with one read of the source and no compile.
            let etag = manager.current()?.etag;
            ok(
                200,
                json!({
                    "name": call.caller.name,
                    "scope": call.caller.scope.as_str(),
                    "writable": call.caller.scope == AdminScope::Write && manager.read_only_reason().is_none(),
                    "read_only_reason": manager.read_only_reason(),
                    "source": manager.source_name(),
                    "csrf": call.caller.csrf,
                }),
                Some(&etag),
            )
        }
        ("GET", "/admin/api/endpoints") => ok(200, json!({ "endpoints": call.endpoints }), None),
        ("GET", "/admin/api/stages") => {
            let (v, etag) = manager.stages()?;
            ok(200, v, Some(&etag))
        }
        ("PUT", "/admin/api/stages/default") => {
            let v = body()?;
            let stage = v
                .get("stage")
                .and_then(Value::as_str)
                .ok_or_else(|| ManageError::bad_request("expected {\"stage\": \"…\"}"))?;
            changed(200, manager.set_default_stage(who, if_match, stage)?)
        }
        ("GET", _) if pattern.ends_with("/permissions") => {
            let q = ListQuery::parse(&call.query)?;
            let (list, etag) = manager.permissions(&target()?, &q)?;
            ok(200, json!({ "permissions": list }), Some(&etag))
        }
        ("POST", _) if pattern.ends_with("/permissions") => {
            let spec: PermissionSpec = parse(body()?)?;
            changed(
                201,
                manager.add_permission(who, if_match, &target()?, spec)?,
            )
        }
        ("PATCH", _) if pattern.ends_with("/permissions/{id}") => {
            let patch = PermissionPatch::from_json(&body()?)?;
            changed(
                200,
                manager.edit_permission(who, if_match, &target()?, id_ref()?, &patch)?,
            )
        }
        ("DELETE", _) if pattern.ends_with("/permissions/{id}") => changed(
            200,
            manager.delete_permission(who, if_match, &target()?, id_ref()?)?,
        ),
        ("GET", "/admin/api/tokens") => {
            let (list, etag) = manager.tokens()?;
            ok(200, json!({ "tokens": list }), Some(&etag))
        }
        ("POST", "/admin/api/tokens") => {
            let new: NewToken = parse(body()?)?;
            let (c, minted) = manager.add_token(who, if_match, &new)?;
            let mut body = c.body;
            body["jwt"] = json!(minted.jwt);
            ok(201, body, Some(&c.etag))
        }
        ("GET", "/admin/api/tokens/{jti}") => {
            let (t, etag) = manager.token(&jti_ref()?)?;
            ok(200, json!({ "token": t }), Some(&etag))
        }
        ("PATCH", "/admin/api/tokens/{jti}") => {
            let patch: TokenPatch = parse(body()?)?;
            changed(200, manager.edit_token(who, if_match, &jti_ref()?, &patch)?)
        }
        ("DELETE", "/admin/api/tokens/{jti}") => {
            changed(200, manager.delete_token(who, if_match, &jti_ref()?)?)
        }
        ("POST", "/admin/api/tokens/{jti}/reissue") => {
            let m = manager.reissue(&jti_ref()?)?;
            tracing::info!(target: "audit", event = "token_reissued", who, jti = %m.jti, "a fresh token string was minted");
            ok(200, json!({ "jwt": m.jwt, "jti": m.jti }), None)
        }
        ("POST", "/admin/api/tokens/{jti}/revoke") => {
            changed(200, manager.revoke_token(who, if_match, &jti_ref()?)?)
        }
        ("GET", "/admin/api/tokens/{jti}/management") => {
            let (v, etag) = manager.management(&jti_ref()?)?;
            ok(200, v, Some(&etag))
        }
        ("PATCH", "/admin/api/tokens/{jti}/management") => {
            let v = body()?;
            let list = |k: &str| -> Result<Vec<String>, ManageError> {
                match v.get(k) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(x) => parse(x.clone()),
                }
            };
            if let Value::Object(o) = &v {
                if let Some(k) = o.keys().find(|k| *k != "enable" && *k != "disable") {
                    return Err(ManageError::bad_request(format!(
                        "unknown field {k:?} (enable, disable)"
                    )));
                }
            }
            changed(
                200,
                manager.set_management(
                    who,
                    if_match,
                    &jti_ref()?,
                    &list("enable")?,
                    &list("disable")?,
                )?,
            )
        }
        ("POST", "/admin/api/token-check") => {
            let v = body()?;
            let jwt = v
                .get("jwt")
                .and_then(Value::as_str)
                .ok_or_else(|| ManageError::bad_request("expected {\"jwt\": \"…\"}"))?;
            ok(200, manager.check(jwt)?, None)
        }
        _ => {
            return Err(ManageError::not_found(format!(
                "no management API route {}",
                call.path
            )))
        }
    })
}
