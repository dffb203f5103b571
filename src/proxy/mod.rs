//! The Pingora proxy: each `ProxyHttp` hook is a few lines that delegate.
//!
//! [`admit`] runs the edge checks and the decision and yields one [`admit::Flow`]; a cached
//! read is served by [`cached`], a pass-through is sent and streamed back by
//! [`forward::pass_through`] (the gateway's own upstream request, shared with the fills), so no
//! request enters Pingora's proxy loop; every refusal and failure becomes an answer in [`respond`];
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

use async_trait::async_trait;
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
use admit::Flow;
use ctx::RequestCtx;

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
    /// The one upstream client (and keep-alive pool) of the pass-through and the fills.
    pub upstream: Arc<crate::upstream::UpstreamClient>,
}

fn missing() -> Box<Error> {
    Error::new(ErrorType::InternalError)
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

    /// Every flow but the cached read runs in a future of its own (`Box::pin`): this future is
    /// copied whole when it is created, at every request, so it is kept to the hit path's size.
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
                    Ok(()) => {
                        Box::pin(forward::pass_through(self, session, ctx)).await?;
                        Ok(true)
                    }
                    Err(wait) => {
                        let err = self.refuse(ctx, Rejection::rate_limited(wait, "origin"));
                        Box::pin(self.write_error(session, ctx, &err)).await?;
                        Ok(true)
                    }
                },
            },
            Flow::Respond(err) => {
                Box::pin(self.write_error(session, ctx, &err)).await?;
                Ok(true)
            }
            Flow::Preflight => {
                Box::pin(respond::preflight(session, ctx)).await?;
                Ok(true)
            }
        }
    }

    /// Never reached: every request is answered in `request_filter` — refused, served from the
    /// cache, or passed through by [`forward::pass_through`], which sends the checked request
    /// itself (one write, no replay buffer) instead of letting Pingora proxy the client's.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "contentgate answers every request in request_filter",
        ))
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
