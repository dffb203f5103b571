//! What goes upstream for an admitted request — ONE [`UpstreamRequest`] for the pass-through
//! and for cache fills: the target (a GET's checked parameters re-encoded), the credential
//! (replaced, or the client's in `forward` mode), the re-serialized body with the gateway's own
//! content type, the checked `gcms-stage`/`gcms-locales`, and the request id.
//!
//! The pass-through additionally keeps an allow list of the client's own headers
//! ([`super::headers::FORWARDED`]); a fill sends nothing else, so no unkeyed header can shape
//! a stored answer.

use http::{HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};

use super::headers::FORWARDED;
use crate::config::{Credential, Upstream};
use crate::pipeline::Admitted;
use crate::stage::Cms;
use crate::upstream::UpstreamRequest;

/// The upstream target: the endpoint's path, plus for a GET the checked GraphQL parameters as
/// the gateway re-encoded them.
pub fn path(upstream: &Upstream, a: &Admitted, method: &Method) -> String {
    if *method == Method::GET {
        let qs = std::str::from_utf8(&a.parsed.forward).unwrap_or_default();
        let sep = if upstream.path.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{qs}", upstream.path)
    } else {
        upstream.path.clone()
    }
}

/// `gcms-stage` and `gcms-locales` exactly as they were checked: the stage every root field
/// without a `stage:` argument reads (the client's header or the principal's default), and the
/// locales fallback list (the client's header, canonical, else the CMS's default locale). Sent
/// on every upstream request, so the CMS never applies a default of its own.
pub fn context_headers(a: &Admitted, cms: &Cms) -> [(&'static str, String); 2] {
    let locales = match &a.header_locales {
        Some(l) if !l.is_empty() => l.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(","),
        _ => cms.default_locale.as_str().to_string(),
    };
    [
        ("gcms-stage", a.stage.fallback.as_str().to_string()),
        ("gcms-locales", locales),
    ]
}

/// The request an admitted request sends upstream. `client_authorization`: the client's
/// header, forwarded only in `forward` credential mode.
pub fn request(
    upstream: &Upstream,
    a: &Admitted,
    cms: &Cms,
    method: &Method,
    request_id: &str,
    client_authorization: Option<&HeaderValue>,
) -> UpstreamRequest {
    let post = *method != Method::GET;
    let mut headers: Vec<(&'static str, HeaderValue)> = Vec::with_capacity(5);
    match &upstream.credential {
        Credential::Replace(token) => headers.push(("authorization", token.clone())),
        Credential::Forward => {
            if let Some(auth) = client_authorization {
                headers.push(("authorization", auth.clone()));
            }
        }
    }
    if post {
        headers.push(("content-type", HeaderValue::from_static("application/json")));
    }
    for (name, value) in context_headers(a, cms) {
        // Checked ASCII names joined by commas: always a valid header value.
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.push((name, v));
        }
    }
    if let Ok(id) = HeaderValue::try_from(request_id) {
        headers.push(("x-request-id", id));
    }
    UpstreamRequest {
        method: if post { "POST" } else { "GET" },
        path: path(upstream, a, method),
        headers,
        body: post.then(|| a.parsed.forward.clone()),
    }
}

/// The pass-through's request on the wire: only the client's headers on the allow list are
/// kept (hop-by-hop headers, cookies, `X-Forwarded-*`, `Forwarded`, method overrides, unknown
/// `gcms-*` switches stay at the edge), then the gateway's own are set over them.
pub fn wire(req: &UpstreamRequest, upstream: &Upstream, client: &RequestHeader) -> Result<Vec<u8>> {
    req.wire(
        upstream,
        client
            .headers
            .iter()
            .filter(|(name, _)| FORWARDED.contains(&name.as_str())),
    )
}

/// The pass-through: the checked request sent by [`crate::upstream::UpstreamClient::send`] (header
/// and body in one write, the client's allow-listed headers kept), the answer streamed back as
/// it arrives with the gateway's headers, under the upstream's total deadline. A mutation's
/// answer is scanned for top-level `errors`; a clean one purges what the mutation touched. A
/// failure before the answer's header went out is answered 502/504 by the `fail_to_proxy`
/// hook; after it, the connection is closed (a visibly truncated answer).
pub(super) async fn pass_through(
    gw: &super::Gateway,
    session: &mut pingora::proxy::Session,
    ctx: &mut super::ctx::RequestCtx,
) -> Result<()> {
    let a = ctx.admitted.as_ref().ok_or_else(super::missing)?;
    let upstream = a.endpoint.upstream.clone();
    let mutation = super::is_mutation(ctx);
    let req = request(
        &upstream,
        a,
        &a.snapshot.cms,
        &session.req_header().method,
        &ctx.request_id,
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION),
    );
    let wire = wire(&req, &upstream, session.req_header())?;
    drop(req);
    let started = std::time::Instant::now();
    ctx.upstream_started = Some(started);
    let deadline = tokio::time::Instant::now() + upstream.timeouts.total;
    let sent = tokio::time::timeout_at(deadline, gw.upstream.send(&upstream, &wire, !mutation))
        .await
        .map_err(|_| past_deadline())
        .and_then(|r| r.map_err(|e| e.into_up()));
    // The checked request is written (or failed): its copy on the wire and its body's budget
    // are free, not held while the answer streams.
    drop(wire);
    ctx.body_permit = None;
    let streamed = match sent {
        Ok(answer) => relay(gw, session, ctx, answer, started, deadline, mutation).await,
        Err(e) => Err((e, None)),
    };
    match streamed {
        Ok((up, clean)) => {
            if clean {
                super::cached::purge_after_mutation(gw, ctx);
            }
            gw.upstream.release(&upstream, up);
            Ok(())
        }
        Err((e, answered)) => {
            // A mutation whose outcome is unknown — the upstream or the client failed after it
            // was sent, or its answer was not read to the end — may have run: purge as if it
            // did (a few extra misses, never a stale read). A refused one (errors, non-2xx) not.
            // (A request line the gateway could not write failed before `send`; a malformed
            // answer means the request went out.)
            let never_sent = matches!(
                e.etype(),
                ErrorType::ConnectRefused
                    | ErrorType::ConnectNoRoute
                    | ErrorType::ConnectTimedout
                    | ErrorType::ConnectError
                    | ErrorType::TLSHandshakeFailure
            ) && answered.is_none();
            if mutation && answered != Some(false) && !never_sent {
                super::cached::purge_after_mutation(gw, ctx);
            }
            Err(e)
        }
    }
}

fn past_deadline() -> Box<Error> {
    Error::explain(
        ErrorType::Custom(crate::upstream::UPSTREAM_DEADLINE),
        "upstream exceeded total_timeout",
    )
}

/// Streams the answer of a sent request to the client. Returns the connection (read to the
/// end) and whether a mutation's answer was clean (2xx, no top-level `errors`); on failure,
/// whether the answer known so far was clean (`None`: nothing was read or decided).
async fn relay(
    gw: &super::Gateway,
    session: &mut pingora::proxy::Session,
    ctx: &mut super::ctx::RequestCtx,
    answer: (pingora::http::ResponseHeader, crate::upstream::Exchange),
    started: std::time::Instant,
    deadline: tokio::time::Instant,
    mutation: bool,
) -> std::result::Result<(crate::upstream::Exchange, bool), (Box<Error>, Option<bool>)> {
    let (mut resp, mut up) = answer;
    let waited = started.elapsed();
    ctx.upstream_header = Some(waited);
    crate::upstream::record(
        &gw.metrics,
        ctx.endpoint_kind(),
        waited,
        Ok(resp.status.as_u16()),
    );
    // The exchange dropped the hop-by-hop fields and kept `Content-Length` only when it frames
    // the body. A chunked answer, or one delimited by the upstream closing (HTTP/1.0, no
    // length), goes to the client chunked, so the client's connection stays framed and
    // reusable.
    if !up.length_known() {
        let _ = resp.insert_header(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    // A mutation purges once its whole answer arrived without `errors`: a 200 carrying errors
    // is the CMS refusing it, and changed nothing; a non-2xx answer changed nothing either.
    let success = resp.status.is_success();
    let mut scan = (success && mutation).then(super::ctx::TopLevelErrors::default);
    let fail = |e: Box<Error>, scan: &Option<super::ctx::TopLevelErrors>| {
        let verdict = if !success {
            Some(false)
        } else {
            scan.as_ref().map(|s| !s.found)
        };
        (e, verdict)
    };
    let headers = (|| -> Result<()> {
        // Parsed names: `insert_header` with a `&str` parses (and allocates) each one again.
        resp.insert_header(
            super::headers::X_REQUEST_ID,
            super::headers::request_id(ctx)?,
        )?;
        resp.insert_header(
            super::headers::X_CACHE,
            HeaderValue::from_static(ctx.cache.as_str()),
        )?;
        super::headers::answer_headers(ctx, &mut resp, false)?;
        super::headers::add_cors(ctx, &mut resp)
    })();
    if let Err(e) = headers {
        return Err(fail(e, &scan));
    }
    if let Err(e) = session.write_response_header(Box::new(resp), false).await {
        return Err(fail(e.into_down(), &scan));
    }
    loop {
        let chunk = match tokio::time::timeout_at(deadline, up.read_body_bytes()).await {
            Err(_) => return Err(fail(past_deadline(), &scan)),
            Ok(Err(e)) => return Err(fail(e.into_up(), &scan)),
            Ok(Ok(c)) => c,
        };
        match chunk {
            Some(b) => {
                if let Some(s) = &mut scan {
                    s.feed(&b);
                }
                if let Err(e) = session.write_response_body(Some(b), false).await {
                    return Err(fail(e.into_down(), &scan));
                }
            }
            None => break,
        }
    }
    if let Err(e) = session.write_response_body(None, true).await {
        return Err(fail(e.into_down(), &scan));
    }
    Ok((up, scan.is_some_and(|s| !s.found)))
}
