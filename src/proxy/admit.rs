//! Admission: the edge checks of one request and the call to the decision, ending in one
//! [`Flow`] — forward (cached read or pass-through), a refusal, or a preflight answered here.

use http::Method;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::headers::ambiguous;
use super::respond::{self, ErrorResponse};
use super::Gateway;
use crate::graphql::GraphqlError;
use crate::pipeline::{self, Incoming, Rejection};

pub enum Flow {
    Forward,
    Respond(ErrorResponse),
    /// A CORS preflight the endpoint allows: answered at the edge.
    Preflight,
}

impl Gateway {
    /// The edge checks and the decision: framing, sizes, route, client address, CORS and
    /// preflight, body intake, then [`pipeline::decide`] and the limits of an admitted request.
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        ctx.media = respond::Media::negotiate(
            session
                .req_header()
                .headers
                .get(http::header::ACCEPT)
                .map(|v| v.as_bytes()),
        );
        if let Some(why) = ambiguous(session) {
            return Ok(self.refused(ctx, Rejection::BadFraming(why)));
        }
        let req = session.req_header();
        let limits = &self.config.limits;
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > limits.max_header_bytes {
            return Ok(self.refused(ctx, Rejection::HeadersTooLarge));
        }
        if req.uri.path_and_query().map_or(0, |p| p.as_str().len()) > limits.max_uri_bytes {
            return Ok(self.refused(ctx, Rejection::UriTooLong));
        }
        let ip = client_ip(session, &self.config.trusted_proxies);
        ctx.client_ip = ip;
        // An address over its refusal budget is refused before any other work is done for it
        // (a request to no endpoint included).
        if let Some(wait) = ip.and_then(|ip| self.limiters.admit_address(ip, ctx.started).err()) {
            return Ok(self.refused(ctx, Rejection::rate_limited(wait, "refused")));
        }
        let Some(endpoint) = self.config.route(session.req_header().uri.path()).cloned() else {
            return Ok(self.refused(ctx, Rejection::NotFound));
        };
        ctx.kind = Some(endpoint.kind);
        if ip.is_some_and(|ip| !endpoint.admits(ip)) {
            return Ok(self.refused(ctx, Rejection::AddressDenied));
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
                _ if preflight => return Ok(self.refused(ctx, Rejection::CorsDenied)),
                _ => {}
            }
            if preflight {
                let wanted = session
                    .req_header()
                    .headers
                    .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !cors
                    .methods
                    .split(", ")
                    .any(|m| m.eq_ignore_ascii_case(wanted))
                {
                    return Ok(self.refused(ctx, Rejection::CorsDenied));
                }
                return Ok(Flow::Preflight);
            }
        }
        let limit = self.config.limits.max_body_bytes;
        let body = if method == Method::POST {
            let mut permit = super::body::BodyPermit::empty(&self.bodies);
            // Its own future: a GET's admission need not carry (and copy) the body read's.
            let read = Box::pin(super::body::read(
                session,
                limit,
                self.config.limits.client_body_timeout,
                &mut permit,
            ))
            .await?;
            match read {
                Ok(b) => {
                    // Held until the checked request is written upstream.
                    ctx.body_permit = Some(permit);
                    Some(b)
                }
                // A refused body is freed now, not when Pingora is done with the connection
                // (it may wait to drain the rest of an oversized upload).
                Err(r) => {
                    drop(permit);
                    return Ok(self.refused(ctx, r));
                }
            }
        } else {
            if method == Method::GET && has_body(session) {
                return Ok(self.refused(ctx, Rejection::Graphql(GraphqlError::GetWithBody)));
            }
            None
        };
        // Taken once the body is in: a slow upload is decided against the policy of when it
        // arrived whole, not of when it started (a revocation in between applies).
        let snap = self.store.snapshot();
        let req = session.req_header();
        let kind = endpoint.kind;
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
                .get_all(&super::headers::GCMS_STAGE)
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
            locales_header: req
                .headers
                .get_all(&super::headers::GCMS_LOCALES)
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
            query_string: req.uri.query(),
            body: body.as_deref(),
        };
        let principal = match pipeline::authenticate(&input, &snap) {
            Ok(p) => p,
            Err(rejection) => return Ok(self.refused(ctx, rejection)),
        };
        if let Err(rejection) = self.limit(&principal, ctx.client_ip).await {
            return Ok(self.refused(ctx, rejection));
        }
        match pipeline::decide_authenticated(&input, &snap, &self.config.limits, principal) {
            Ok(admitted) => {
                let reason = match admitted.principal {
                    crate::auth::Principal::Public(_) => "public",
                    crate::auth::Principal::Token(_) => "ok",
                };
                self.metrics.auth_results.with(&[reason], |c| c.inc());
                if admitted.stage.inject {
                    self.metrics
                        .stage_injections
                        .with(&[admitted.principal.kind()], |c| c.inc());
                }
                ctx.admitted = Some(super::ctx::Admitted {
                    endpoint,
                    snapshot: snap,
                    decision: admitted,
                });
                Ok(Flow::Forward)
            }
            Err(rejection) => Ok(self.refused(ctx, rejection)),
        }
    }

    fn refused(&self, ctx: &mut RequestCtx, rejection: Rejection) -> Flow {
        Flow::Respond(self.refuse(ctx, rejection))
    }

    /// Queries on cdn endpoints (and on content endpoints when `content_reads` is set).
    pub(super) fn cacheable(&self, ctx: &RequestCtx) -> bool {
        let Some(a) = &ctx.admitted else {
            return false;
        };
        let kind_ok = match a.endpoint.kind {
            crate::config::EndpointKind::Cdn => true,
            crate::config::EndpointKind::Content => self.config.cache.content_reads,
            crate::config::EndpointKind::Management => false,
        };
        kind_ok && a.operation().kind == crate::graphql::document::OperationKind::Query
    }
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
