//! The refusal boundary: the one place where a refusal or an upstream failure is counted,
//! audited and written as an HTTP response ([`Gateway::refuse`], [`Gateway::write_error`],
//! [`Gateway::upstream_failure`]).
//!
//! Every error is GraphQL-shaped: `{"errors":[{"message","extensions":{"code"}}],
//! "extensions":{"requestId"}}` (no `data`: the request was not executed, GraphQL over HTTP).
//! The status table (`From<&Rejection>`) is the contract in DESIGN.md and is pinned by a test
//! per variant. No message ever contains the token.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use serde_json::json;

use super::ctx::RequestCtx;
use super::headers::add_cors;
use super::Gateway;
use crate::upstream::Failure;

use crate::auth::AuthError;
use crate::graphql::GraphqlError;
use crate::pipeline::Rejection;

/// A response the gateway writes itself.
pub struct ErrorResponse {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Headers the refusal carries: names the gateway's own, parsed at compile time.
    pub headers: Vec<(HeaderName, String)>,
}

impl ErrorResponse {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(&self, request_id: &str) -> Bytes {
        Bytes::from(
            json!({
                "errors": [{"message": self.message, "extensions": {"code": self.code}}],
                "extensions": {"requestId": request_id},
            })
            .to_string(),
        )
    }

    /// The answer's header: its status (from the table below), the media type, and the
    /// headers the refusal carries (static names; values the gateway wrote).
    pub fn header_block(
        &self,
        request_id: HeaderValue,
        body_len: usize,
        media: Media,
    ) -> Result<ResponseHeader> {
        let mut h = HeaderMap::with_capacity(5 + self.headers.len());
        h.insert(header::CONTENT_TYPE, media.header_value());
        h.append(header::VARY, HeaderValue::from_static("Accept"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
        h.insert(super::headers::X_REQUEST_ID, request_id);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (k, v) in &self.headers {
            // The gateway's own numbers and words; one that could not go on the wire is left
            // out rather than losing the answer.
            if let Ok(value) = HeaderValue::from_str(v) {
                h.append(k.clone(), value);
            }
        }
        super::headers::own_header(self.status, h)
    }
}

/// The media type of the gateway's JSON answers, negotiated from `Accept` (GraphQL over HTTP
/// §6.4): `application/graphql-response+json` when the client ranks it at least as high as
/// `application/json`, else `application/json` (also for no `Accept`, `*/*` and legacy clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Media {
    #[default]
    Json,
    GraphqlResponse,
}

impl Media {
    pub fn negotiate(accept: Option<&[u8]>) -> Media {
        let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
            return Media::Json;
        };
        let (mut graphql, mut json) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = if name.eq_ignore_ascii_case("application/graphql-response+json") {
                &mut graphql
            } else if name.eq_ignore_ascii_case("application/json") {
                &mut json
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match graphql {
            Some(g) if g > 0.0 && g >= json.unwrap_or(0.0) => Media::GraphqlResponse,
            _ => Media::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Media::Json => "application/json",
            Media::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.content_type())
    }
}

impl From<&Rejection> for ErrorResponse {
    fn from(r: &Rejection) -> Self {
        match r {
            Rejection::NotFound => {
                ErrorResponse::new(404, "NOT_FOUND", "no endpoint is configured at this path")
            }
            Rejection::Auth(e) => auth(e),
                        Rejection::Graphql(e) => graphql(e),
            Rejection::Forbidden { denial, .. } => ErrorResponse::new(403, "FORBIDDEN", denial.to_string()),
            Rejection::ManagementForbidden { field, permission, .. } => ErrorResponse::new(
                403,
                "FORBIDDEN",
                match permission {
                    Some(p) => format!("missing management permission {p} (field `{field}`)"),
                    None => format!("management field `{field}` is not allowed (not in the permission table; needs \"*\")"),
                },
            ),
                        Rejection::RateLimited { retry_after, scope } => {
                ErrorResponse::new(429, "RATE_LIMITED", format!("too many requests ({scope} limit); retry after {retry_after} s"))
                    .header(header::RETRY_AFTER, retry_after.to_string())
            }
                        Rejection::HeadersTooLarge => ErrorResponse::new(431, "REQUEST_HEADER_FIELDS_TOO_LARGE", "the request headers are too large"),
            Rejection::BadFraming(why) => ErrorResponse::new(400, "BAD_REQUEST", format!("ambiguous request: {why}")),
            Rejection::UriTooLong => ErrorResponse::new(414, "URI_TOO_LONG", "the request URI is too long; send large queries with POST"),
            Rejection::AddressDenied => ErrorResponse::new(403, "FORBIDDEN", "the client address is not allowed on this endpoint"),
            Rejection::CorsDenied => ErrorResponse::new(403, "FORBIDDEN", "origin or method not allowed by this endpoint's CORS policy"),
            Rejection::NoSchema => ErrorResponse::new(503, "SCHEMA_UNAVAILABLE", "the schema map is not available; requests cannot be authorized"),
            Rejection::PolicyStale => ErrorResponse::new(503, "POLICY_STALE", "this replica cannot confirm the current token policy (revocations); token requests are refused until it can")
                .header(header::RETRY_AFTER, "1"),
            Rejection::BodyBudget => ErrorResponse::new(503, "BODY_BUDGET_EXHAUSTED", "the gateway is buffering as many request bodies as it may (limits.max_buffered_body_bytes); retry shortly")
                .header(header::RETRY_AFTER, "1"),
        }
    }
}

fn auth(e: &AuthError) -> ErrorResponse {
    if e.is_bad_request() {
        return ErrorResponse::new(400, "BAD_REQUEST", e.to_string());
    }
    let challenge = match e {
        // No credentials at all: a plain challenge (RFC 6750 §3.1: no error code).
        AuthError::PublicDenied => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    ErrorResponse::new(401, "UNAUTHENTICATED", format!("{e} ({})", e.reason()))
        .header(header::WWW_AUTHENTICATE, challenge)
}

fn graphql(e: &GraphqlError) -> ErrorResponse {
    let status = match e {
        GraphqlError::UnsupportedMediaType => 415,
        GraphqlError::BodyTooLarge { .. } => 413,
        GraphqlError::BodyTimeout(_) => 408,
        GraphqlError::MethodNotAllowed(_) | GraphqlError::MutationOnCdn => 405,
        GraphqlError::MutationOverGet => 405,
        _ => 400,
    };
    let r = ErrorResponse::new(status, e.code(), e.to_string());
    match e {
        GraphqlError::MutationOverGet => r.header(header::ALLOW, "POST"),
        GraphqlError::MethodNotAllowed(_) => r.header(header::ALLOW, "GET, POST"),
        GraphqlError::MutationOnCdn => r.header(header::ALLOW, "GET, POST"),
        _ => r,
    }
}

/// A cache fill refused because concurrent fills already buffer `[cache] fill_buffer_bytes`.
pub fn fill_busy() -> ErrorResponse {
    ErrorResponse::new(
        503,
        "FILL_BUDGET_EXHAUSTED",
        "too many large answers are being fetched at once; retry shortly",
    )
}

/// Upstream failures: timeouts are 504, everything else 502.
pub fn upstream(timeout: bool) -> ErrorResponse {
    if timeout {
        ErrorResponse::new(
            504,
            "UPSTREAM_TIMEOUT",
            "the content API did not answer in time",
        )
    } else {
        ErrorResponse::new(
            502,
            "UPSTREAM_ERROR",
            "the content API could not be reached",
        )
    }
}

/// A CORS preflight the endpoint allows, answered at the edge.
pub(super) async fn preflight(session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let mut map = HeaderMap::with_capacity(8);
    if let Some((_, cors)) = &ctx.cors {
        let value = |v: &str| {
            HeaderValue::from_str(v).or_err(ErrorType::InternalError, "a CORS header value")
        };
        map.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value(&cors.methods)?);
        map.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value(&cors.headers)?);
        map.insert(header::ACCESS_CONTROL_MAX_AGE, value(&cors.max_age)?);
    }
    map.insert(
        super::headers::X_REQUEST_ID,
        super::headers::request_id(ctx)?,
    );
    map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let mut h = super::headers::own_header(204, map)?;
    add_cors(ctx, &mut h)?;
    ctx.own_status = Some(204);
    session.write_response_header(Box::new(h), true).await
}

impl Gateway {
    /// The one refusal boundary: counts the refusal (metric, refusal budget of the address),
    /// writes its audit line, and returns the answer to write.
    pub(super) fn refuse(&self, ctx: &mut RequestCtx, rejection: Rejection) -> ErrorResponse {
        if rejection.caused_by_caller() {
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
            Rejection::BodyBudget => {
                self.metrics
                    .graphql_rejections
                    .with_label_values(&["body_budget"])
                    .inc();
                ctx.refusal_reason = Some("body_budget");
            }
            Rejection::PolicyStale => {
                self.metrics
                    .auth_results
                    .with_label_values(&["policy_stale"])
                    .inc();
                ctx.refusal_reason = Some("policy_stale");
            }
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
        (&rejection).into()
    }

    /// An upstream failure (or a client gone mid-request) as the client sees it: timeouts 504,
    /// other upstream failures 502, counted once; a connection whose answer already began is
    /// closed instead (an error body then would be read as the rest of that answer).
    pub(super) async fn upstream_failure(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let downstream = matches!(e.esource(), pingora::ErrorSource::Downstream);
        let bad_request = matches!(e.etype(), ErrorType::HTTPStatus(code) if *code < 500);
        let failure = Failure::of(e);
        if !downstream && !bad_request {
            crate::upstream::record(
                &self.metrics,
                ctx.endpoint_kind(),
                ctx.upstream_started
                    .map(|s| s.elapsed())
                    .unwrap_or_default(),
                Err(failure),
            );
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
            _ => upstream(failure.is_timeout()),
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

    /// Writes an answer of the gateway's own (a refusal or an upstream failure).
    pub(super) async fn write_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        err: &ErrorResponse,
    ) -> Result<()> {
        let body = err.body(&ctx.request_id);
        let mut header =
            err.header_block(super::headers::request_id(ctx)?, body.len(), ctx.media)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Rejection) -> (u16, &'static str) {
        let e = ErrorResponse::from(&r);
        (e.status, e.code)
    }

    #[test]
    fn graphql_response_json_is_chosen_only_when_ranked_at_least_as_high() {
        let n = |a: &str| Media::negotiate(Some(a.as_bytes()));
        assert_eq!(Media::negotiate(None), Media::Json);
        assert_eq!(n("*/*"), Media::Json);
        assert_eq!(n("application/json"), Media::Json);
        assert_eq!(
            n("application/graphql-response+json"),
            Media::GraphqlResponse
        );
        assert_eq!(
            n("application/graphql-response+json, application/json;q=0.9"),
            Media::GraphqlResponse
        );
        assert_eq!(
            n("application/json, application/graphql-response+json;q=0.5"),
            Media::Json
        );
        assert_eq!(n("application/graphql-response+json;q=0"), Media::Json);
        assert_eq!(
            n("Application/GraphQL-Response+JSON"),
            Media::GraphqlResponse
        );
    }

    #[test]
    fn status_table() {
        assert_eq!(status(Rejection::NotFound), (404, "NOT_FOUND"));
        assert_eq!(
            status(Rejection::Auth(AuthError::DuplicateHeader)),
            (400, "BAD_REQUEST")
        );
        for e in [
            AuthError::Revoked,
            AuthError::UnknownJti,
            AuthError::BadSignature,
            AuthError::PublicDenied,
            AuthError::AlgNone,
        ] {
            assert_eq!(status(Rejection::Auth(e)), (401, "UNAUTHENTICATED"));
        }
        assert_eq!(
            status(Rejection::Graphql(GraphqlError::UnsupportedMediaType)),
            (415, "UNSUPPORTED_MEDIA_TYPE")
        );
        assert_eq!(
            status(Rejection::Graphql(GraphqlError::BodyTooLarge { limit: 1 })),
            (413, "PAYLOAD_TOO_LARGE")
        );
        assert_eq!(
            status(Rejection::Graphql(GraphqlError::MutationOverGet)),
            (405, "METHOD_NOT_ALLOWED")
        );
        assert_eq!(
            status(Rejection::Graphql(GraphqlError::MutationOnCdn)),
            (405, "METHOD_NOT_ALLOWED")
        );
        assert_eq!(
            status(Rejection::Graphql(GraphqlError::Batch)),
            (400, "BATCH_NOT_SUPPORTED")
        );
        assert_eq!(
            status(Rejection::Graphql(GraphqlError::Syntax {
                message: "x".into(),
                index: 0
            })),
            (400, "GRAPHQL_PARSE_FAILED")
        );
        assert_eq!(upstream(true).status, 504);
        assert_eq!(upstream(false).status, 502);
    }

    /// Every `Rejection` variant, pinned (the match in `From<&Rejection>` is exhaustive, so a
    /// new variant must be added here too).
    #[test]
    fn every_refusal_has_its_status_and_code() {
        use crate::permissions::authorize::Denial;
        use crate::pipeline::Who;
        let denial = Denial {
            action: "read",
            model: None,
            stage: None,
            locale: None,
            field: "posts".into(),
        };
        let cases = [
            (Rejection::NotFound, 404, "NOT_FOUND"),
            (Rejection::Auth(AuthError::Revoked), 401, "UNAUTHENTICATED"),
            (
                Rejection::Graphql(GraphqlError::Subscription),
                400,
                "BAD_OPERATION",
            ),
            (
                Rejection::Forbidden {
                    denial: Box::new(denial),
                    who: Who::default(),
                },
                403,
                "FORBIDDEN",
            ),
            (
                Rejection::ManagementForbidden {
                    field: "createModel".into(),
                    permission: Some("MODEL_CREATE"),
                    who: Who::default(),
                },
                403,
                "FORBIDDEN",
            ),
            (Rejection::NoSchema, 503, "SCHEMA_UNAVAILABLE"),
            (
                Rejection::RateLimited {
                    retry_after: 3,
                    scope: "ip",
                },
                429,
                "RATE_LIMITED",
            ),
            (Rejection::AddressDenied, 403, "FORBIDDEN"),
            (Rejection::CorsDenied, 403, "FORBIDDEN"),
            (
                Rejection::HeadersTooLarge,
                431,
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
            ),
            (Rejection::UriTooLong, 414, "URI_TOO_LONG"),
            (Rejection::BadFraming("x"), 400, "BAD_REQUEST"),
            (Rejection::PolicyStale, 503, "POLICY_STALE"),
            (Rejection::BodyBudget, 503, "BODY_BUDGET_EXHAUSTED"),
        ];
        for (r, code, name) in cases {
            let e = ErrorResponse::from(&r);
            assert_eq!((e.status, e.code), (code, name), "{r:?}");
            if code == 429 {
                assert!(e.headers.contains(&(header::RETRY_AFTER, "3".to_string())));
            }
        }
        assert_eq!(fill_busy().status, 503);
    }

    #[test]
    fn invalid_token_carries_the_bearer_challenge() {
        let e = ErrorResponse::from(&Rejection::Auth(AuthError::Expired));
        assert!(e.headers.contains(&(
            header::WWW_AUTHENTICATE,
            "Bearer error=\"invalid_token\"".to_string()
        )));
        let body: serde_json::Value = serde_json::from_slice(&e.body("rid")).unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
        assert_eq!(body["extensions"]["requestId"], "rid");
        assert!(body["data"].is_null());
    }
}
