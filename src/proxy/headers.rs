//! Request and response headers at the edge: what is never forwarded, what a pass-through
//! forwards, the framing and `Connection` checks, and the headers every answer gets (CORS,
//! `Vary`, media type, privacy of token answers).

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::respond;

/// The client's own request headers a pass-through forwards to the CMS (`authorization` only
/// matters in `forward` credential mode; otherwise the gateway's replaces it). Host,
/// Content-Length, Content-Type, `gcms-stage`/`gcms-locales` and the request id are the
/// gateway's (`forward::request`). Cache fills forward none of these.
pub const FORWARDED: &[&str] = &[
    "accept",
    "accept-encoding",
    "authorization",
    "hyg-stale-if-error",
    "hyg-stale-while-revalidate",
    "traceparent",
    "tracestate",
    "user-agent",
];

// Names parsed once: a lookup by `&str` parses the name on every call.
pub const GCMS_STAGE: HeaderName = HeaderName::from_static("gcms-stage");
pub const GCMS_LOCALES: HeaderName = HeaderName::from_static("gcms-locales");
pub const HYG_STALE_WHILE_REVALIDATE: HeaderName =
    HeaderName::from_static("hyg-stale-while-revalidate");
pub const HYG_STALE_IF_ERROR: HeaderName = HeaderName::from_static("hyg-stale-if-error");
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The header of an answer the gateway writes itself (a replayed entry, a refusal, a
/// preflight), built in `http`'s map directly. Pingora's `insert_header` parses every name again
/// from its bytes (an allocation for a name `http` does not know) and keeps a second map with
/// each name's spelling. The names here are all the gateway's own, so neither is needed. On the
/// wire, Pingora spells a header without a recorded spelling as it does its own `Date` and
/// `Connection`: the common names capitalized (`Content-Type`, `Content-Length`, `Age`,
/// `Cache-Control`), the others in lower case.
pub fn own_header(status: u16, headers: HeaderMap) -> Result<ResponseHeader> {
    let status = http::StatusCode::from_u16(status)
        .or_err(ErrorType::InternalError, "an answer's status")?;
    Ok(crate::upstream::h1::response_header(status, headers))
}

/// The request id as a header value (hex digits: always valid).
pub fn request_id(ctx: &RequestCtx) -> Result<HeaderValue> {
    HeaderValue::from_str(&ctx.request_id).or_err(ErrorType::InternalError, "the request id")
}

/// Adds the CORS response headers when the request's origin is allowed.
pub fn add_cors(ctx: &RequestCtx, h: &mut ResponseHeader) -> Result<()> {
    if let Some((origin, cors)) = &ctx.cors {
        h.insert_header("access-control-allow-origin", origin.as_str())?;
        h.append_header("vary", HeaderValue::from_static("Origin"))?;
        if cors.credentials {
            h.insert_header(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            )?;
        }
        h.insert_header(
            "access-control-expose-headers",
            HeaderValue::from_static("x-request-id, x-cache, age"),
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
pub fn answer_headers(ctx: &RequestCtx, h: &mut ResponseHeader, complete: bool) -> Result<()> {
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
            HeaderValue::from_static(
                "Accept, gcms-stage, gcms-locales, hyg-stale-while-revalidate, hyg-stale-if-error",
            ),
        )?;
        if complete && ctx.media == respond::Media::GraphqlResponse && h.status.is_success() {
            h.insert_header("content-type", ctx.media.header_value())?;
        }
    }
    if matches!(
        ctx.admitted.as_ref().map(|a| &a.principal),
        Some(crate::auth::Principal::Token(_))
    ) {
        h.insert_header(
            "cache-control",
            HeaderValue::from_static("private, no-store"),
        )?;
    }
    Ok(())
}

/// Requests whose framing or target is ambiguous (RFC 9112 §3.2, §6.1, §6.3). Pingora already
/// refuses what it cannot frame (chunked not last, Transfer-Encoding on HTTP/1.0, differing
/// Content-Lengths); a request with both Transfer-Encoding and Content-Length it accepts as
/// chunked after dropping the length — the disagreement a smuggling attempt relies on — so the
/// raw header block is checked for it here.
pub fn ambiguous(session: &Session) -> Option<&'static str> {
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
    /// Headers the gateway reads besides those it forwards (and every `gcms-*`/`hyg-*`).
    const READ: &[&str] = &[
        "host",
        "content-length",
        "content-type",
        "origin",
        "x-forwarded-for",
        "x-request-id",
        "access-control-request-method",
    ];
    req.headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|name| {
            let prefixed = |p: &str| {
                name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            };
            FORWARDED
                .iter()
                .chain(READ)
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
                || prefixed("gcms-")
                || prefixed("hyg-")
        })
}

/// Whether a raw HTTP/1 header block has a Content-Length field.
fn names_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}
