//! The Pingora proxy: each `ProxyHttp` hook is a few lines that delegate.
//!
//! `request_filter` reads the (bounded) body, runs [`crate::pipeline::decide`] and either lets
//! the request continue upstream or writes the refusal; `upstream_request_filter` rewrites the
//! request for the CMS (path, Host, credential, injected stage, hop-by-hop headers);
//! `fail_to_proxy` turns upstream failures into 502/504; `logging` records the access log and
//! metrics. Pingora's `Ok(true)` ("response already written") never leaves this module.

mod cached;
pub mod ctx;
pub mod deadline;
pub mod forward;
pub mod respond;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::cache::ReadCache;
use crate::config::{Config, Credential};
use crate::graphql::GraphqlError;
use crate::metrics::{status_class, Metrics};
use crate::pipeline::{self, Incoming, Rejection};
use crate::policy::store::PolicyStore;
use ctx::RequestCtx;
use respond::ErrorResponse;

use crate::config::MAX_FORWARDED_BODY_BYTES;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus proxy credentials: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Request headers a pass-through forwards to the CMS (the credential is replaced unless the
/// upstream's mode is `forward`; Host, Content-Length and the injected stage are the gateway's).
/// Cache fills forward even less: only what is in the cache key.
const FORWARDED: &[&str] = &[
    "accept",
    "accept-encoding",
    "authorization",
    "content-type",
    "gcms-locales",
    "gcms-stage",
    "hyg-stale-if-error",
    "hyg-stale-while-revalidate",
    "traceparent",
    "tracestate",
    "user-agent",
];

pub struct Gateway {
    pub config: Arc<Config>,
    pub store: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
    pub cache: Option<Arc<ReadCache>>,
    pub limiters: Arc<crate::ratelimit::Limiters>,
}

/// The client address: the TCP peer, or — only when the peer is a trusted proxy — the first
/// untrusted address walking `X-Forwarded-For` from the right (each trusted hop appended the
/// address it saw). An entry that does not parse as an address (after stripping a port or
/// brackets) ends the walk at the peer: what lies left of it was written by the client. Every
/// address is canonical (`::ffff:a.b.c.d` is `a.b.c.d`), so IPv4 rules hold on a dual-stack
/// listener. Used for the per-IP limits and allow/deny lists, never for authentication or
/// cache keys.
fn client_ip(session: &Session, trusted: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical())?;
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let values: Vec<&str> = session
        .req_header()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        match forwarded_address(entry.trim()) {
            Some(ip) if is_trusted(&ip) => continue,
            Some(ip) => return Some(ip),
            None => return Some(peer),
        }
    }
    Some(peer)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::7`, `[2001:db8::7]` or
/// `[2001:db8::7]:443`, canonical.
fn forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// Adds the CORS response headers when the request's origin is allowed.
pub(crate) fn add_cors(ctx: &RequestCtx, h: &mut ResponseHeader) -> Result<()> {
    if let Some((origin, cors)) = &ctx.cors {
        h.insert_header("access-control-allow-origin", origin.as_str())?;
        h.append_header("vary", "Origin")?;
        if cors.credentials {
            h.insert_header("access-control-allow-credentials", "true")?;
        }
        h.insert_header(
            "access-control-expose-headers",
            "x-request-id, x-cache, age",
        )?;
    }
    Ok(())
}

/// The headers every answer the gateway relays or replays gets, besides its own ids:
///
/// - JSON answers vary by `Accept`. A 200 the gateway knows to be a complete, error-free result
///   (`complete`: an answer fit for the cache) is labelled with the media type the client asked
///   for (GraphQL over HTTP); a pass-through keeps the CMS's own type, since the CMS got the
///   client's `Accept` and only it knows whether its answer has the semantics
///   `graphql-response+json` promises.
/// - Answers for a token are that token's alone: no shared cache in front of the gateway (a CDN,
///   a corporate proxy) may store them, whatever the upstream said.
pub(crate) fn answer_headers(
    ctx: &RequestCtx,
    h: &mut ResponseHeader,
    complete: bool,
) -> Result<()> {
    let json = h
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if json {
        // The answer depends on the negotiated type and on the stage and locales the request
        // named (headers), and on the staleness windows it allowed.
        h.append_header(
            "vary",
            "Accept, gcms-stage, gcms-locales, hyg-stale-while-revalidate, hyg-stale-if-error",
        )?;
        if complete && ctx.media == respond::Media::GraphqlResponse && h.status.is_success() {
            h.insert_header("content-type", ctx.media.content_type())?;
        }
    }
    if matches!(
        ctx.admitted.as_ref().map(|a| &a.principal),
        Some(crate::auth::Principal::Token(_))
    ) {
        h.insert_header("cache-control", "private, no-store")?;
    }
    Ok(())
}

enum Flow {
    Forward,
    Respond(ErrorResponse),
    /// A CORS preflight the endpoint allows: answered at the edge.
    Preflight,
}

impl Gateway {
    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        ctx.media = respond::Media::negotiate(
            session
                .req_header()
                .headers
                .get(http::header::ACCEPT)
                .map(|v| v.as_bytes()),
        );
        if let Some(why) = ambiguous(session) {
            return Ok(self.refuse(ctx, Rejection::BadFraming(why)));
        }
        let req = session.req_header();
        let limits = &self.config.limits;
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > limits.max_header_bytes {
            return Ok(self.refuse(ctx, Rejection::HeadersTooLarge));
        }
        if req.uri.path_and_query().map_or(0, |p| p.as_str().len()) > limits.max_uri_bytes {
            return Ok(self.refuse(ctx, Rejection::UriTooLong));
        }
        let Some(endpoint) = self.config.route(session.req_header().uri.path()).cloned() else {
            return Ok(Flow::Respond((&Rejection::NotFound).into()));
        };
        let ip = client_ip(session, &self.config.trusted_proxies);
        ctx.client_ip = ip;
        if let Some(ip) = ip {
            // An address over its refusal budget is refused before any work is done for it.
            if let Err(wait) = self.limiters.admit_address(ip) {
                ctx.endpoint = Some(endpoint);
                return Ok(self.refuse(
                    ctx,
                    Rejection::RateLimited {
                        retry_after: crate::ratelimit::retry_after_secs(wait),
                        scope: "refused",
                    },
                ));
            }
            if !endpoint.admits(ip) {
                ctx.endpoint = Some(endpoint);
                return Ok(self.refuse(ctx, Rejection::AddressDenied));
            }
        }
        let method = session.req_header().method.clone();
        if let Some(cors) = endpoint.cors.clone() {
            let origin = session
                .req_header()
                .headers
                .get(http::header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let preflight = method == Method::OPTIONS
                && session
                    .req_header()
                    .headers
                    .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
            match origin {
                Some(o) if cors.allows(&o) => ctx.cors = Some((o, cors.clone())),
                _ if preflight => {
                    ctx.endpoint = Some(endpoint);
                    return Ok(self.refuse(ctx, Rejection::CorsDenied));
                }
                _ => {}
            }
            if preflight {
                let wanted = session
                    .req_header()
                    .headers
                    .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                ctx.endpoint = Some(endpoint);
                if !cors
                    .methods
                    .split(", ")
                    .any(|m| m.eq_ignore_ascii_case(wanted))
                {
                    return Ok(self.refuse(ctx, Rejection::CorsDenied));
                }
                return Ok(Flow::Preflight);
            }
        }
        ctx.endpoint = Some(endpoint);
        let snap = self.store.snapshot();
        ctx.snapshot = Some(snap.clone());
        let limit = self.config.limits.max_body_bytes;
        let body = if method == Method::POST {
            match read_body(session, limit, self.config.limits.client_body_timeout).await? {
                Ok(b) => Some(b),
                Err(e) => return Ok(self.refuse(ctx, Rejection::Graphql(e))),
            }
        } else {
            if method == Method::GET && has_body(session) {
                return Ok(self.refuse(ctx, Rejection::Graphql(GraphqlError::GetWithBody)));
            }
            None
        };
        let req = session.req_header();
        let Some(kind) = ctx.endpoint.as_ref().map(|e| e.kind) else {
            return Ok(self.refuse(ctx, Rejection::NotFound));
        };
        let input = Incoming {
            method: &method,
            endpoint: kind,
            authorization: req
                .headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
            content_type: req
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            stage_header: req
                .headers
                .get_all("gcms-stage")
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
            locales_header: req
                .headers
                .get_all("gcms-locales")
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
            query_string: req.uri.query(),
            body: body.as_deref(),
        };
        match pipeline::decide(&input, &snap, &self.config.limits) {
            Ok(admitted) => {
                let reason = match admitted.principal {
                    crate::auth::Principal::Public(_) => "public",
                    crate::auth::Principal::Token(_) => "ok",
                };
                self.metrics.auth_results.with_label_values(&[reason]).inc();
                if admitted.stage.inject {
                    self.metrics
                        .stage_injections
                        .with_label_values(&[admitted.principal.kind()])
                        .inc();
                }
                let limited = match &admitted.principal {
                    crate::auth::Principal::Token(t) => self
                        .limiters
                        .token(&t.jti, t.rate_limit)
                        .err()
                        .map(|w| (w, "token")),
                    crate::auth::Principal::Public(_) => ctx
                        .client_ip
                        .and_then(|ip| self.limiters.public(ip).err())
                        .map(|w| (w, "ip")),
                };
                // Only the gateway's re-serialization of what was checked goes upstream.
                ctx.body = body.map(|_| admitted.parsed.forward.clone());
                ctx.admitted = Some(admitted);
                if let Some((wait, scope)) = limited {
                    return Ok(self.refuse(
                        ctx,
                        Rejection::RateLimited {
                            retry_after: crate::ratelimit::retry_after_secs(wait),
                            scope,
                        },
                    ));
                }
                Ok(Flow::Forward)
            }
            Err(rejection) => Ok(self.refuse(ctx, rejection)),
        }
    }

    /// Queries on cdn endpoints (and on content endpoints when `content_reads` is set).
    fn cacheable(&self, ctx: &RequestCtx) -> bool {
        let (Some(endpoint), Some(a)) = (&ctx.endpoint, &ctx.admitted) else {
            return false;
        };
        let kind_ok = match endpoint.kind {
            crate::config::EndpointKind::Cdn => true,
            crate::config::EndpointKind::Content => self.config.cache.content_reads,
            crate::config::EndpointKind::Management => false,
        };
        kind_ok && a.operation().kind == crate::graphql::document::OperationKind::Query
    }

    fn refuse(&self, ctx: &mut RequestCtx, rejection: Rejection) -> Flow {
        if !matches!(rejection, Rejection::RateLimited { .. }) {
            if let Some(ip) = ctx.client_ip {
                self.limiters.refused(ip);
            }
        }
        match &rejection {
            Rejection::Auth(e) => {
                self.metrics
                    .auth_results
                    .with_label_values(&[e.reason()])
                    .inc();
                ctx.refusal_reason = Some(e.reason());
                if matches!(
                    e,
                    crate::auth::AuthError::Revoked | crate::auth::AuthError::UnknownJti
                ) {
                    tracing::info!(target: "audit", event = "token_refused", request_id = %ctx.request_id, reason = e.reason(), "revoked or unknown token presented");
                }
            }
            Rejection::Graphql(e) => {
                self.metrics
                    .graphql_rejections
                    .with_label_values(&[e.reason()])
                    .inc();
                ctx.refusal_reason = Some(e.reason());
            }
            Rejection::Forbidden { denial: d, who } => {
                self.metrics
                    .permission_denials
                    .with_label_values(&[d.action])
                    .inc();
                ctx.refusal_reason = Some("forbidden");
                tracing::info!(target: "audit", event = "permission_denied", request_id = %ctx.request_id, principal = %who.name, jti = who.jti.as_deref(), action = d.action, model = d.model.as_deref(), stage = d.stage.as_ref().map(|s| s.as_str()), locale = d.locale.as_ref().map(|l| l.as_str()), field = %d.field, "permission denied");
            }
            Rejection::ManagementForbidden {
                field,
                permission,
                who,
            } => {
                self.metrics
                    .permission_denials
                    .with_label_values(&["management"])
                    .inc();
                ctx.refusal_reason = Some("forbidden");
                tracing::info!(target: "audit", event = "permission_denied", request_id = %ctx.request_id, principal = %who.name, jti = who.jti.as_deref(), action = "management", permission = *permission, field = %field, "management permission denied");
            }
            Rejection::NoSchema => ctx.refusal_reason = Some("no_schema"),
            Rejection::NotFound => ctx.refusal_reason = Some("not_found"),
            Rejection::RateLimited { scope, .. } => {
                self.metrics
                    .rate_limit_rejections
                    .with_label_values(&[scope])
                    .inc();
                ctx.refusal_reason = Some("rate_limited");
            }
            Rejection::AddressDenied => ctx.refusal_reason = Some("address_denied"),
            Rejection::HeadersTooLarge | Rejection::UriTooLong => {
                self.metrics
                    .graphql_rejections
                    .with_label_values(&["limit"])
                    .inc();
                ctx.refusal_reason = Some("limit");
            }
            Rejection::CorsDenied => ctx.refusal_reason = Some("cors_denied"),
            Rejection::BadFraming(_) => {
                self.metrics
                    .graphql_rejections
                    .with_label_values(&["framing"])
                    .inc();
                ctx.refusal_reason = Some("framing");
            }
        }
        Flow::Respond((&rejection).into())
    }

    async fn write_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        err: &ErrorResponse,
    ) -> Result<()> {
        let body = err.body(&ctx.request_id);
        let mut header = err.header_block(&ctx.request_id, body.len(), ctx.media);
        add_cors(ctx, &mut header)?;
        ctx.own_status = Some(err.status);
        // The connection may hold an unread body or a half-parsed request: do not reuse it.
        if session.req_header().method != Method::GET || err.status == 400 || err.status == 413 {
            session.set_keepalive(None);
        }
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await
    }
}

/// Requests whose framing or target is ambiguous (RFC 9112 §3.2, §6.1, §6.3). Pingora already
/// refuses what it cannot frame (chunked not last, Transfer-Encoding on HTTP/1.0, differing
/// Content-Lengths); a request with both Transfer-Encoding and Content-Length it accepts as
/// chunked after dropping the length — the disagreement a smuggling attempt relies on — so the
/// raw header block is checked for it here.
fn ambiguous(session: &Session) -> Option<&'static str> {
    let req = session.req_header();
    if req.version <= http::Version::HTTP_11 {
        match req.headers.get_all(http::header::HOST).iter().count() {
            0 if req.version == http::Version::HTTP_11 => return Some("no Host header"),
            0 | 1 => {}
            _ => return Some("more than one Host header"),
        }
        if req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && names_content_length(&session.as_downstream().to_h1_raw())
        {
            return Some("both Transfer-Encoding and Content-Length");
        }
    }
    if req.headers.contains_key(http::header::UPGRADE) && req.method != Method::GET {
        return Some("Upgrade on a request with a body");
    }
    if req
        .headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .count()
        > 1
    {
        return Some("Content-Type is repeated");
    }
    if nominates_checked_header(req) {
        return Some("Connection names a header the gateway checks or forwards");
    }
    None
}

/// Whether `Connection` nominates a header the gateway reads or forwards. Pingora's upstream
/// sanitizer removes every nominated header *after* the gateway's checks, so `Connection:
/// gcms-stage` (or `authorization` in forward mode) would make the CMS see a different request
/// than the one checked. Other nominations (`keep-alive`, `close`, `upgrade`, a custom hop
/// header) are dropped at the edge as hop-by-hop.
fn nominates_checked_header(req: &RequestHeader) -> bool {
    req.headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| t.trim_ascii().to_ascii_lowercase())
        .any(|name| {
            let name = String::from_utf8_lossy(&name);
            FORWARDED.contains(&name.as_ref())
                || name.starts_with("gcms-")
                || name.starts_with("hyg-")
                || matches!(
                    name.as_ref(),
                    "host"
                        | "content-length"
                        | "origin"
                        | "x-forwarded-for"
                        | "x-request-id"
                        | "access-control-request-method"
                )
        })
}

/// Whether a raw HTTP/1 header block has a Content-Length field.
fn names_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

/// Reads the whole request body, refusing it as soon as it exceeds `limit` (checked against
/// Content-Length first, so an oversized upload is refused without being read).
async fn read_body(
    session: &mut Session,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<std::result::Result<Bytes, GraphqlError>> {
    let limit = limit.min(MAX_FORWARDED_BODY_BYTES);
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Ok(Err(GraphqlError::BodyTooLarge { limit }));
    }
    session.enable_retry_buffering();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    // One deadline for the whole body (a slow POST), not per read.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, session.read_request_body()).await else {
            return Ok(Err(GraphqlError::BodyTimeout(timeout)));
        };
        let Some(chunk) = next? else { break };
        if buf.len() + chunk.len() > limit {
            return Ok(Err(GraphqlError::BodyTooLarge { limit }));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Ok(buf.freeze()))
}

/// Whether the request carries a body. HTTP/1 says so in its framing headers; an HTTP/2 stream
/// may carry DATA frames without a `content-length`, so there the stream decides (no
/// END_STREAM on HEADERS means a body follows).
fn has_body(session: &mut Session) -> bool {
    let req = session.req_header();
    let framed = req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    framed || (req.version == http::Version::HTTP_2 && !session.as_downstream_mut().is_body_empty())
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout
    ) || matches!(e.etype(), ErrorType::Custom(c) if *c == UPSTREAM_DEADLINE)
}

/// Closed set for `contentgate_upstream_errors_total{kind}`.
fn error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => "timeout",
        ErrorType::Custom(c) if *c == UPSTREAM_DEADLINE => "timeout",
        ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError
        | ErrorType::TLSWantX509Lookup => "tls",
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::SocketError => "connect",
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => "reset",
        _ => "protocol",
    }
}

const UPSTREAM_DEADLINE: &str = "upstream total timeout";

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.metrics.in_flight.inc();
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // A client that stops reading is dropped once a write has waited this long.
        session
            .as_downstream_mut()
            .set_write_timeout(Some(self.config.limits.client_send_timeout));
        match self.admit(session, ctx).await? {
            Flow::Forward => match &self.cache {
                Some(cache) if self.cacheable(ctx) => {
                    cached::serve(self, cache, session, ctx).await?;
                    Ok(true)
                }
                _ => {
                    // The origin budget guard: uncached traffic only.
                    if let Err(wait) = self.limiters.origin() {
                        let rejection = Rejection::RateLimited {
                            retry_after: crate::ratelimit::retry_after_secs(wait),
                            scope: "origin",
                        };
                        let err: ErrorResponse = (&rejection).into();
                        let _ = self.refuse(ctx, rejection);
                        self.write_error(session, ctx, &err).await?;
                        return Ok(true);
                    }
                    Ok(false)
                }
            },
            Flow::Respond(err) => {
                self.write_error(session, ctx, &err).await?;
                Ok(true)
            }
            Flow::Preflight => {
                let mut h = ResponseHeader::build(204, Some(8))?;
                if let Some((_, cors)) = &ctx.cors {
                    h.insert_header("access-control-allow-methods", cors.methods.as_str())?;
                    h.insert_header("access-control-allow-headers", cors.headers.as_str())?;
                    h.insert_header("access-control-max-age", cors.max_age.as_str())?;
                }
                add_cors(ctx, &mut h)?;
                h.insert_header("x-request-id", ctx.request_id.as_str())?;
                h.insert_header("content-length", "0")?;
                ctx.own_status = Some(204);
                session.write_response_header(Box::new(h), true).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let endpoint = ctx
            .endpoint
            .as_ref()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let now = Instant::now();
        ctx.upstream_started = Some(now);
        ctx.upstream_deadline = Some(now + endpoint.upstream.timeouts.total);
        Ok(Box::new((*endpoint.upstream.peer()).clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let endpoint = ctx
            .endpoint
            .as_ref()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let upstream = &endpoint.upstream;
        // An allow list, not a deny list: whatever else the client sent (hop-by-hop headers,
        // cookies, X-Forwarded-*, Forwarded, method overrides, unknown gcms-* switches) stays
        // at the edge, so nothing the gateway did not check can change what the CMS does.
        let dropped: Vec<http::HeaderName> = up
            .headers
            .keys()
            .filter(|k| !FORWARDED.contains(&k.as_str()))
            .cloned()
            .collect();
        for h in dropped {
            up.remove_header(&h);
        }
        let path = match &ctx.admitted {
            Some(a) => forward::path(upstream, a, &session.req_header().method),
            None => upstream.path.clone(),
        };
        up.set_uri(
            path.parse()
                .map_err(|_| Error::new(ErrorType::InternalError))?,
        );
        up.insert_header(http::header::HOST, upstream.host_header.clone())?;
        match &upstream.credential {
            Credential::Replace(token) => {
                up.insert_header(http::header::AUTHORIZATION, token.clone())?;
            }
            Credential::Forward => {}
        }
        up.remove_header(&http::header::CONTENT_TYPE);
        if let Some(body) = &ctx.body {
            up.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
            up.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        }
        // The stage and locales that were checked, always and as checked: never the client's
        // bytes, never left to the CMS's (or the service credential's) defaults.
        if let (Some(a), Some(snap)) = (&ctx.admitted, &ctx.snapshot) {
            for (name, value) in forward::context_headers(a, &snap.cms) {
                up.insert_header(name, value)?;
            }
        }
        up.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The body was read (and decided on) in request_filter; Pingora replays it from its
        // retry buffer. Send the gateway's re-serialization of what was checked, once, and
        // never a byte the gateway did not read (a GET has none).
        *body = if ctx.body_sent {
            None
        } else {
            ctx.body_sent = true;
            ctx.body.clone()
        };
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.upstream_deadline.is_some_and(|d| Instant::now() > d) {
            return Err(Error::explain(
                ErrorType::Custom(UPSTREAM_DEADLINE),
                "upstream exceeded total_timeout",
            ));
        }
        if let (Some(started), Some(e)) = (ctx.upstream_started, ctx.endpoint.as_ref()) {
            self.metrics
                .upstream_duration
                .with_label_values(&[e.kind.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        if resp.status.is_server_error() || resp.status.as_u16() == 429 {
            self.metrics
                .upstream_errors
                .with_label_values(&["status"])
                .inc();
        }
        for h in HOP_BY_HOP {
            if *h != "transfer-encoding" {
                resp.remove_header(*h);
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(scan) = &mut ctx.mutation_answer {
            if let Some(b) = body {
                scan.feed(b);
            }
            if end {
                if !scan.found {
                    cached::purge_after_mutation(self, ctx);
                }
                ctx.mutation_answer = None;
            }
        }
        // Pingora's read timeout is per read; the total deadline is checked as data arrives.
        if ctx.upstream_deadline.is_some_and(|d| Instant::now() > d) {
            return Err(Error::explain(
                ErrorType::Custom(UPSTREAM_DEADLINE),
                "upstream exceeded total_timeout",
            ));
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A mutation purges once its whole answer arrived without `errors` (see the body
        // filter): a 200 carrying errors is the CMS refusing it, and changed nothing.
        if resp.status.is_success()
            && ctx.admitted.as_ref().is_some_and(|a| {
                a.operation().kind == crate::graphql::document::OperationKind::Mutation
            })
        {
            ctx.mutation_answer = Some(ctx::TopLevelErrors::default());
        }
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        resp.insert_header("x-cache", ctx.cache.as_str())?;
        answer_headers(ctx, resp, false)?;
        add_cors(ctx, resp)?;
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {peer}"));
        // A retry may execute a mutation twice (pingora#979): only idempotent reads retry.
        let is_mutation = _ctx.admitted.as_ref().is_some_and(|a| {
            a.operation().kind == crate::graphql::document::OperationKind::Mutation
        });
        if is_mutation || !session.req_header().method.is_idempotent() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let downstream = matches!(e.esource(), pingora::ErrorSource::Downstream);
        let bad_request = matches!(e.etype(), ErrorType::HTTPStatus(code) if *code < 500);
        if !downstream && !bad_request {
            self.metrics
                .upstream_errors
                .with_label_values(&[error_kind(e)])
                .inc();
        }
        let close = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        // The upstream's header already went out: an error body now would be read as the rest
        // of that answer. Close instead, so the client sees a truncated response.
        if session.response_written().is_some() {
            return close;
        }
        let response = match e.etype() {
            ErrorType::HTTPStatus(code) if *code < 500 => {
                ErrorResponse::new(*code, "BAD_REQUEST", "malformed request")
            }
            // The client is gone: nobody to answer.
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
                if downstream =>
            {
                return close
            }
            _ if downstream => ErrorResponse::new(400, "BAD_REQUEST", "malformed request"),
            _ => respond::upstream(is_timeout(e)),
        };
        let status = response.status;
        if let Err(err) = self.write_error(session, ctx, &response).await {
            tracing::debug!(error = %err, "could not write the error response; client gone");
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.metrics.in_flight.dec();
        let status = ctx
            .own_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let endpoint = ctx.endpoint_kind();
        self.metrics
            .requests
            .with_label_values(&[endpoint, status_class(status), ctx.cache.as_str()])
            .inc();
        let elapsed = ctx.started.elapsed();
        self.metrics
            .request_duration
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
        let upstream_ms = ctx
            .upstream_started
            .map(|s| s.elapsed().as_secs_f64() * 1000.0);
        let (principal, jti, op_type, op_name, stage) = match &ctx.admitted {
            Some(a) => (
                a.principal.name(),
                a.principal.jti(),
                Some(a.operation().kind.as_str()),
                a.operation().name.as_deref(),
                Some(a.stage.primary().as_str()),
            ),
            None => ("-", None, None, None, None),
        };
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            endpoint,
            method = %session.req_header().method,
            principal,
            jti,
            operation_type = op_type,
            operation_name = op_name,
            stage,
            cache = ctx.cache.as_str(),
            status,
            refusal = ctx.refusal_reason,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream_ms,
            error = e.map(|e| e.etype().as_str()),
            "request"
        );
    }
}
