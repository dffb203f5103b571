//! The Pingora proxy: each `ProxyHttp` hook is a few lines that delegate.
//!
//! [`admit`] runs the edge checks and the decision and yields one [`admit::Flow`]; a cached
//! read is served by [`cached`], a pass-through gets its [`forward::request`] applied in
//! `upstream_request_filter`; every refusal and failure becomes an answer in [`respond`];
//! [`headers`] holds what is forwarded and what every answer carries. Pingora's `Ok(true)`
//! ("response already written") never leaves this module.

mod admit;
pub mod body;
mod cached;
pub mod ctx;
pub mod deadline;
pub mod forward;
pub mod headers;
mod limits;
pub mod respond;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::cache::ReadCache;
use crate::config::Config;
use crate::graphql::document::OperationKind;
use crate::metrics::Metrics;
use crate::pipeline::Rejection;
use crate::policy::store::PolicyStore;
use crate::upstream::UPSTREAM_DEADLINE;
use admit::Flow;
use ctx::RequestCtx;
use headers::{add_cors, answer_headers, HOP_BY_HOP};

pub struct Gateway {
    pub config: Arc<Config>,
    pub store: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
    pub cache: Option<Arc<ReadCache>>,
    pub limiters: Arc<crate::ratelimit::Limiters>,
    /// `[cluster]`: limits counted in Redis, and the stale-policy rule.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Request bodies buffered by requests in flight (`limits.max_buffered_body_bytes`).
    pub bodies: Arc<body::BodyBudget>,
}

fn missing() -> Box<Error> {
    Error::new(ErrorType::InternalError)
}

fn past_deadline(ctx: &RequestCtx) -> Result<()> {
    if ctx.upstream_deadline.is_some_and(|d| Instant::now() > d) {
        return Err(Error::explain(
            ErrorType::Custom(UPSTREAM_DEADLINE),
            "upstream exceeded total_timeout",
        ));
    }
    Ok(())
}

fn is_mutation(ctx: &RequestCtx) -> bool {
    ctx.admitted
        .as_ref()
        .is_some_and(|a| a.operation().kind == OperationKind::Mutation)
}

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
                // The origin budget guard: uncached traffic only.
                _ => match self.origin_budget().await {
                    Ok(()) => Ok(false),
                    Err(wait) => {
                        let err = self.refuse(ctx, Rejection::rate_limited(wait, "origin"));
                        self.write_error(session, ctx, &err).await?;
                        Ok(true)
                    }
                },
            },
            Flow::Respond(err) => {
                self.write_error(session, ctx, &err).await?;
                Ok(true)
            }
            Flow::Preflight => {
                respond::preflight(session, ctx).await?;
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
            .admitted
            .as_ref()
            .map(|a| &a.endpoint)
            .ok_or_else(missing)?;
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
        let a = ctx.admitted.as_ref().ok_or_else(missing)?;
        let req = forward::request(
            &a.endpoint.upstream,
            a,
            &a.snapshot.cms,
            &session.req_header().method,
            &ctx.request_id,
            session
                .req_header()
                .headers
                .get(http::header::AUTHORIZATION),
        );
        forward::apply(&req, &a.endpoint.upstream, up)
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
        past_deadline(ctx)?;
        if let Some(started) = ctx.upstream_started {
            crate::upstream::record(
                &self.metrics,
                ctx.endpoint_kind(),
                started.elapsed(),
                Ok(resp.status.as_u16()),
            );
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
        past_deadline(ctx)?;
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
        if resp.status.is_success() && is_mutation(ctx) {
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
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {peer}"));
        // A retry may execute a mutation twice (pingora#979): only idempotent reads retry.
        if is_mutation(ctx) || !session.req_header().method.is_idempotent() {
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
        self.upstream_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.metrics.in_flight.dec();
        ctx.record(&self.metrics, session, e);
    }
}
