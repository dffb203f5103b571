//! The API-access CLI verbs. Each verb is one management API call (or a read and a change):
//! sent to a running gateway with `--admin URL`, or run in this process against the policy
//! source gateway.toml names — through the very same router ([`crate::admin::api::handle`]),
//! so the two modes cannot drift apart.
//!
//! Exit codes: 0 done; 1 refused or invalid (the API's error code and message on stderr);
//! 2 bad usage; 3 not confirmed; 4 the gateway or the policy source could not be reached.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::admin::api::{self, Call, Caller};
use crate::cli::{At, PermissionCommand, Scopes, StageCommand, StageSet, TokenCommand, Whose};
use crate::config::AdminScope;
use crate::manage::Manager;

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_DECLINED: u8 = 3;
pub const EXIT_UNREACHABLE: u8 = 4;

/// Why a verb stopped, and its exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// The largest answer read from a gateway.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

enum Mode {
    Remote {
        host: String,
        port: u16,
        token: String,
    },
    Local {
        manager: Arc<Manager>,
        who: String,
    },
}

struct Client {
    mode: Mode,
    json: bool,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Client {
    fn new(at: &At, who: &str) -> Result<Client, Failure> {
        let mode = match &at.admin {
            Some(url) => {
                let u = url::Url::parse(url)
                    .map_err(|e| fail(EXIT_USAGE, format!("--admin {url:?}: {e}")))?;
                if u.scheme() != "http" {
                    return Err(fail(
                        EXIT_USAGE,
                        "--admin: the admin listener speaks plain HTTP (keep it on a private network or loopback; tunnel with kubectl port-forward)",
                    ));
                }
                let token = std::env::var("CONTENTGATE_ADMIN_TOKEN").map_err(|_| {
                    fail(
                        EXIT_USAGE,
                        "--admin needs the credential in CONTENTGATE_ADMIN_TOKEN",
                    )
                })?;
                Mode::Remote {
                    host: u.host_str().unwrap_or("127.0.0.1").to_string(),
                    port: u.port_or_known_default().unwrap_or(80),
                    token: token.trim().to_string(),
                }
            }
            None => Mode::Local {
                manager: Arc::new(
                    Manager::for_config(at.config.path.clone())
                        .map_err(|e| fail(EXIT_UNREACHABLE, e.message))?,
                ),
                who: who.to_string(),
            },
        };
        Ok(Client {
            mode,
            json: at.json,
        })
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, Failure> {
        let body_bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        match &self.mode {
            Mode::Local { manager, who } => {
                let call = Call {
                    method: method.to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    if_match: if_match.map(|e| format!("\"{e}\"")),
                    body: body_bytes,
                    caller: Caller {
                        name: who.clone(),
                        scope: AdminScope::Write,
                        csrf: None,
                    },
                    endpoints: Value::Null,
                };
                let r = match api::handle(manager, call) {
                    Ok(r) => r,
                    Err(e) => api::error_reply(&e),
                };
                Ok(Answer {
                    status: r.status().as_u16(),
                    body: serde_json::from_slice(r.body()).unwrap_or(Value::Null),
                })
            }
            Mode::Remote { host, port, token } => {
                let target = if query.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{query}")
                };
                let mut head = format!(
                    "{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
                    body_bytes.len()
                );
                if body.is_some() {
                    head.push_str("Content-Type: application/json\r\n");
                }
                if let Some(e) = if_match {
                    head.push_str(&format!("If-Match: \"{e}\"\r\n"));
                }
                head.push_str("\r\n");
                let unreachable =
                    |e: std::io::Error| fail(EXIT_UNREACHABLE, format!("{host}:{port}: {e}"));
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
                    .map_err(unreachable)?
                    .next()
                    .ok_or_else(|| fail(EXIT_UNREACHABLE, format!("{host}: no address")))?;
                let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
                s.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
                s.set_write_timeout(Some(TIMEOUT)).map_err(unreachable)?;
                s.write_all(head.as_bytes()).map_err(unreachable)?;
                s.write_all(&body_bytes).map_err(unreachable)?;
                let mut raw = Vec::new();
                s.take(MAX_ANSWER)
                    .read_to_end(&mut raw)
                    .map_err(unreachable)?;
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                let at = match resp.parse(&raw) {
                    Ok(httparse::Status::Complete(n)) => n,
                    _ => return Err(fail(EXIT_UNREACHABLE, "the gateway's answer is not HTTP")),
                };
                let status = resp.code.unwrap_or(0);
                let body = serde_json::from_slice(&raw[at..]).unwrap_or_else(|_| {
                    json!({ "error": { "code": "NOT_JSON", "message": String::from_utf8_lossy(&raw[at..]).trim().to_string() } })
                });
                Ok(Answer { status, body })
            }
        }
    }

    /// A read; an error answer is a failure.
    fn get(&self, path: &str, query: &str) -> Result<Value, Failure> {
        let a = self.send("GET", path, query, None, None)?;
        check(a)
    }

    /// A change made on the current version (or on `if_match` when given).
    fn change(
        &self,
        method: &str,
        path: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Result<Value, Failure> {
        let etag = match if_match {
            Some(e) => e.to_string(),
            None => self.get("/admin/api/whoami", "")?["etag"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        };
        check(self.send(method, path, "", Some(&body), Some(&etag))?)
    }

    /// The jti of a token given by name or jti.
    fn jti_of(&self, token: &str) -> Result<(String, String), Failure> {
        let list = self.get("/admin/api/tokens", "")?;
        let tokens = items(&list["tokens"]);
        let by = |k: &str| {
            tokens
                .iter()
                .filter(|t| t[k].as_str() == Some(token))
                .cloned()
                .collect::<Vec<_>>()
        };
        let found = by("jti");
        let found = if found.is_empty() { by("name") } else { found };
        match found.as_slice() {
            [t] => Ok((
                t["jti"].as_str().unwrap_or("").to_string(),
                t["name"].as_str().unwrap_or("").to_string(),
            )),
            [] => Err(fail(
                EXIT_REFUSED,
                format!("no token named {token:?} (NOT_FOUND)"),
            )),
            _ => Err(fail(
                EXIT_REFUSED,
                format!("several tokens are named {token:?}: give the jti"),
            )),
        }
    }

    fn print(&self, v: &Value, table: impl FnOnce(&Value) -> String) -> String {
        if self.json {
            format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
        } else {
            table(v)
        }
    }
}

/// The elements of a JSON list (none when it is not one).
fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn check(a: Answer) -> Result<Value, Failure> {
    if (200..300).contains(&a.status) {
        return Ok(a.body);
    }
    let code = a.body["error"]["code"]
        .as_str()
        .unwrap_or("ERROR")
        .to_string();
    let message = a.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let exit = if a.status == 503 || a.status == 0 {
        EXIT_UNREACHABLE
    } else {
        EXIT_REFUSED
    };
    Err(fail(exit, format!("{message} ({code}, HTTP {})", a.status)))
}

/// Columns padded to their widest cell, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn list_text(v: &Value, all: &str) -> String {
    match v.as_array() {
        None => all.to_string(),
        Some(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn permissions_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(&v["permissions"])
        .iter()
        .map(|p| {
            let stages = if p["action"] == "publish" {
                format!(
                    "{} -> {}",
                    list_text(&p["from_stages"], "all"),
                    list_text(&p["to_stages"], "all")
                )
            } else {
                list_text(&p["stages"], "all")
            };
            vec![
                p["id"].to_string(),
                p["action"].as_str().unwrap_or("").to_string(),
                list_text(&p["models"], "all"),
                list_text(&p["locales"], "all"),
                stages,
            ]
        })
        .collect();
    table(&["ID", "ACTION", "MODELS", "LOCALES", "STAGES"], &rows)
}

fn token_row(t: &Value) -> Vec<String> {
    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
    vec![
        s("name"),
        s("jti"),
        s("default_stage"),
        if t["revoked"] == true {
            "revoked"
        } else {
            "active"
        }
        .to_string(),
        s("created"),
        s("updated"),
        s("description"),
    ]
}

const TOKEN_HEADERS: [&str; 7] = [
    "NAME",
    "JTI",
    "DEFAULT STAGE",
    "STATUS",
    "CREATED",
    "UPDATED",
    "DESCRIPTION",
];

fn scopes_json(s: &Scopes) -> serde_json::Map<String, Value> {
    let mut o = serde_json::Map::new();
    for (k, v) in [
        ("models", &s.models),
        ("locales", &s.locales),
        ("stages", &s.stages),
        ("from_stages", &s.from_stages),
        ("to_stages", &s.to_stages),
    ] {
        if !v.is_empty() {
            o.insert(k.into(), json!(v));
        }
    }
    o
}

/// Reads one line from stdin after printing `prompt` on stderr.
fn ask(prompt: &str) -> String {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim().to_string()
}

/// Permission `id` of the list at `base`, and the ETag of the version it was read at.
fn shown(c: &Client, base: &str, id: usize) -> Result<(Value, String), Failure> {
    let list = c.get(base, "")?;
    let etag = list["etag"].as_str().unwrap_or("").to_string();
    items(&list["permissions"])
        .into_iter()
        .find(|p| p["id"].as_u64() == Some(id as u64))
        .map(|p| (p, etag))
        .ok_or_else(|| fail(EXIT_REFUSED, format!("no permission {id} (NOT_FOUND)")))
}

fn permissions_path(c: &Client, whose: &Whose) -> Result<String, Failure> {
    Ok(match &whose.token {
        None => "/admin/api/public/permissions".to_string(),
        Some(t) => format!("/admin/api/tokens/{}/permissions", c.jti_of(t)?.0),
    })
}

pub fn endpoints(at: &At, who: &str) -> Result<String, Failure> {
    let c = Client::new(at, who)?;
    let v = if at.admin.is_none() {
        // In-process: the endpoints come from gateway.toml.
        let cfg = crate::config::Config::load(&at.config.path)
            .map_err(|e| fail(EXIT_REFUSED, e.to_string()))?;
        json!({ "endpoints": crate::server::endpoints_list(&cfg) })
    } else {
        c.get("/admin/api/endpoints", "")?
    };
    Ok(c.print(&v, |v| {
        let rows: Vec<Vec<String>> = items(&v["endpoints"])
            .iter()
            .map(|e| {
                vec![
                    e["kind"].as_str().unwrap_or("").to_string(),
                    e["path"].as_str().unwrap_or("").to_string(),
                    e["url"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        table(&["KIND", "PATH", "URL"], &rows)
    }))
}

pub fn stage(cmd: &StageCommand, who: &str) -> Result<String, Failure> {
    let StageCommand::Default { set, at } = cmd;
    let c = Client::new(at, who)?;
    let v = match set {
        None => c.get("/admin/api/stages", "")?,
        Some(StageSet::Set { stage }) => c.change(
            "PUT",
            "/admin/api/stages/default",
            json!({ "stage": stage }),
            None,
        )?,
    };
    Ok(c.print(&v, |v| {
        format!(
            "default public stage: {}\n",
            v["public_default_stage"].as_str().unwrap_or("")
        )
    }))
}

pub fn permission(cmd: &PermissionCommand, who: &str) -> Result<String, Failure> {
    match cmd {
        PermissionCommand::List {
            whose,
            actions,
            scopes,
            sort,
            at,
        } => {
            let c = Client::new(at, who)?;
            let path = permissions_path(&c, whose)?;
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("action", actions),
                ("model", &scopes.models),
                ("locale", &scopes.locales),
                ("stage", &scopes.stages),
            ] {
                if !v.is_empty() {
                    q.append_pair(k, &v.join(","));
                }
            }
            if let Some(s) = sort {
                q.append_pair("sort", s);
            }
            let v = c.get(&path, &q.finish())?;
            Ok(c.print(&v, permissions_table))
        }
        PermissionCommand::Add {
            whose,
            action,
            scopes,
            at,
        } => {
            let c = Client::new(at, who)?;
            let path = permissions_path(&c, whose)?;
            let mut body = scopes_json(scopes);
            body.insert("action".into(), json!(action));
            let v = c.change("POST", &path, Value::Object(body), None)?;
            Ok(c.print(&v, |v| {
                let mut s = permissions_table(&json!({ "permissions": [v["permission"]] }));
                for n in items(&v["notes"]) {
                    s.push_str(&format!("note: {}\n", n.as_str().unwrap_or("")));
                }
                s
            }))
        }
        PermissionCommand::Edit {
            id,
            whose,
            scopes,
            all_models,
            all_locales,
            all_stages,
            if_match,
            at,
        } => {
            let c = Client::new(at, who)?;
            let base = permissions_path(&c, whose)?;
            // Changed at the version whose permission `id` is shown here (or the one given).
            let (p, etag) = shown(&c, &base, *id)?;
            eprint!(
                "editing:\n{}",
                permissions_table(&json!({ "permissions": [p] }))
            );
            let at_etag = if_match.clone().unwrap_or(etag);
            let path = format!("{base}/{id}");
            let mut body = scopes_json(scopes);
            for (flag, k) in [
                (all_models, "models"),
                (all_locales, "locales"),
                (all_stages, "stages"),
            ] {
                if *flag {
                    body.insert(k.into(), Value::Null);
                }
            }
            if body.is_empty() {
                return Err(fail(
                    EXIT_USAGE,
                    "nothing to change: give --model/--locale/--stage (or --all-…)",
                ));
            }
            let v = c.change("PATCH", &path, Value::Object(body), Some(&at_etag))?;
            Ok(c.print(&v, |v| {
                permissions_table(&json!({ "permissions": [v["permission"]] }))
            }))
        }
        PermissionCommand::Delete {
            id,
            whose,
            yes,
            if_match,
            at,
        } => {
            let c = Client::new(at, who)?;
            let base = permissions_path(&c, whose)?;
            let (p, etag) = shown(&c, &base, *id)?;
            if !yes {
                eprint!("{}", permissions_table(&json!({ "permissions": [p] })));
                if ask("Delete this permission? It cannot be undone. Type \"delete\" to confirm: ")
                    != "delete"
                {
                    return Err(fail(EXIT_DECLINED, "not confirmed: nothing deleted"));
                }
            }
            // Deleted at the version that was shown (or the one given).
            let at_etag = if_match.clone().unwrap_or(etag);
            let v = c.change("DELETE", &format!("{base}/{id}"), json!({}), Some(&at_etag))?;
            Ok(c.print(&v, |_| format!("deleted permission {id}\n")))
        }
    }
}

/// The API-access `token` verbs (not mint/inspect/revoke, which main.rs runs).
pub fn token(cmd: &TokenCommand, who: &str) -> Result<String, Failure> {
    match cmd {
        TokenCommand::List { at } => {
            let c = Client::new(at, who)?;
            let v = c.get("/admin/api/tokens", "")?;
            Ok(c.print(&v, |v| {
                let rows: Vec<Vec<String>> = items(&v["tokens"]).iter().map(token_row).collect();
                table(&TOKEN_HEADERS, &rows)
            }))
        }
        TokenCommand::Add {
            name,
            description,
            default_stage,
            at,
        } => {
            let c = Client::new(at, who)?;
            let mut body = json!({ "name": name, "description": description });
            if let Some(s) = default_stage {
                body["default_stage"] = json!(s);
            }
            let v = c.change("POST", "/admin/api/tokens", body, None)?;
            Ok(c.print(&v, |v| {
                format!(
                    "{}\ntoken string (shown once, stored nowhere; copy it now):\n{}\n",
                    table(&TOKEN_HEADERS, &[token_row(&v["token"])]),
                    v["jwt"].as_str().unwrap_or("")
                )
            }))
        }
        TokenCommand::Edit {
            token,
            name,
            description,
            default_stage,
            at,
        } => {
            let c = Client::new(at, who)?;
            let (jti, _) = c.jti_of(token)?;
            let mut body = serde_json::Map::new();
            for (k, v) in [
                ("name", name),
                ("description", description),
                ("default_stage", default_stage),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if body.is_empty() {
                return Err(fail(
                    EXIT_USAGE,
                    "nothing to change: give --name, --description or --default-stage",
                ));
            }
            let v = c.change(
                "PATCH",
                &format!("/admin/api/tokens/{jti}"),
                Value::Object(body),
                None,
            )?;
            Ok(c.print(&v, |v| table(&TOKEN_HEADERS, &[token_row(&v["token"])])))
        }
        TokenCommand::Delete { token, yes, at } => {
            let c = Client::new(at, who)?;
            let (jti, name) = c.jti_of(token)?;
            if !yes
                && ask(&format!(
                    "Deleting token {name:?} revokes its jti {jti}: every string ever issued for it is refused from the next request. Type the token's name to confirm: "
                )) != name
            {
                return Err(fail(EXIT_DECLINED, "not confirmed: nothing deleted"));
            }
            let v = c.change(
                "DELETE",
                &format!("/admin/api/tokens/{jti}"),
                json!({}),
                None,
            )?;
            Ok(c.print(&v, |_| {
                format!("deleted token {name:?}; jti {jti} revoked\n")
            }))
        }
        TokenCommand::Check { jwt, at } => {
            let c = Client::new(at, who)?;
            let jwt = if jwt == "-" {
                let mut s = String::new();
                let _ = std::io::stdin()
                    .lock()
                    .take(64 * 1024)
                    .read_to_string(&mut s);
                s.trim().to_string()
            } else {
                jwt.clone()
            };
            let v = c.get_post("/admin/api/token-check", json!({ "jwt": jwt }))?;
            Ok(c.print(&v, |v| {
                let mut s = String::new();
                s.push_str(&format!("header: {}\n", v["header"]));
                s.push_str(&format!("claims: {}\n", v["claims"]));
                s.push_str(&format!("jti: {}\n", v["jti"].as_str().unwrap_or("(none)")));
                s.push_str(&format!(
                    "verified: {}\n",
                    match &v["verified"] {
                        Value::Bool(true) => "yes".to_string(),
                        Value::Bool(false) =>
                            format!("no ({})", v["verify_error"].as_str().unwrap_or("")),
                        _ => format!("not checked ({})", v["verify_error"].as_str().unwrap_or("")),
                    }
                ));
                let status = v["status"].as_str().unwrap_or("");
                s.push_str(&match &v["token"] {
                    Value::Object(_) => format!(
                        "status: {status} — the same token as {:?} (jti {})\n",
                        v["token"]["name"].as_str().unwrap_or(""),
                        v["token"]["jti"].as_str().unwrap_or("")
                    ),
                    _ => format!("status: {status} — no token in the list has this jti\n"),
                });
                s
            }))
        }
        TokenCommand::Reissue { token, at } => {
            let c = Client::new(at, who)?;
            let (jti, _) = c.jti_of(token)?;
            let v = c.get_post(&format!("/admin/api/tokens/{jti}/reissue"), json!({}))?;
            Ok(c.print(&v, |v| format!("{}\n", v["jwt"].as_str().unwrap_or(""))))
        }
        TokenCommand::Permissions {
            token,
            management: _,
            enable,
            disable,
            all,
            at,
        } => {
            let c = Client::new(at, who)?;
            let (jti, _) = c.jti_of(token)?;
            let path = format!("/admin/api/tokens/{jti}/management");
            let v = if enable.is_empty() && disable.is_empty() {
                c.get(&path, "")?
            } else {
                c.change(
                    "PATCH",
                    &path,
                    json!({ "enable": enable, "disable": disable }),
                    None,
                )?
            };
            Ok(c.print(&v, |v| {
                let rows: Vec<Vec<String>> = items(&v["permissions"])
                    .iter()
                    .filter(|p| *all || p["enabled"] == true)
                    .map(|p| {
                        vec![
                            p["name"].as_str().unwrap_or("").to_string(),
                            if p["enabled"] == true { "on" } else { "off" }.to_string(),
                            p["description"].as_str().unwrap_or("").to_string(),
                        ]
                    })
                    .collect();
                table(&["PERMISSION", "ENABLED", "DESCRIPTION"], &rows)
            }))
        }
        _ => Err(fail(EXIT_USAGE, "not an API-access verb")),
    }
}

impl Client {
    /// A POST that writes nothing (token check, re-issue): no If-Match.
    fn get_post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        check(self.send("POST", path, "", Some(&body), None)?)
    }
}
