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

/// Shapes Pingora's upstream request header into `req`: the client's headers outside the allow
/// list are dropped (hop-by-hop headers, cookies, `X-Forwarded-*`, `Forwarded`, method
/// overrides, unknown `gcms-*` switches stay at the edge), then the gateway's own are set.
pub fn apply(req: &UpstreamRequest, upstream: &Upstream, up: &mut RequestHeader) -> Result<()> {
    let dropped: Vec<http::HeaderName> = up
        .headers
        .keys()
        .filter(|k| !FORWARDED.contains(&k.as_str()) || is_own(k.as_str()))
        .cloned()
        .collect();
    for h in dropped {
        up.remove_header(&h);
    }
    up.set_uri(
        req.path
            .parse()
            .map_err(|_| Error::new(ErrorType::InternalError))?,
    );
    up.insert_header(http::header::HOST, upstream.host_header.clone())?;
    for (name, value) in &req.headers {
        up.insert_header(*name, value.clone())?;
    }
    if let Some(body) = &req.body {
        up.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    Ok(())
}

/// Headers only the gateway sets upstream (the client's copies are never kept).
fn is_own(name: &str) -> bool {
    matches!(
        name,
        "content-type" | "gcms-stage" | "gcms-locales" | "x-request-id"
    )
}
