//! The cached read path inside the proxy: build the key, look up, serve HIT/STALE, or join the
//! coalesced fill and serve its answer (or a stale entry when the upstream fails).
//!
//! Only headers that are part of the key (stage, locales) or that the gateway sets itself reach
//! the upstream on a fill, so no unkeyed header can change a stored answer.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::HeaderMap;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::{CacheStatus, RequestCtx};
use super::headers::{HYG_STALE_IF_ERROR, HYG_STALE_WHILE_REVALIDATE, X_CACHE, X_REQUEST_ID};
use super::{respond, Gateway};
use crate::cache::{window, CacheKey, FillRequest, Outcome, Purge, ReadCache, Stored, Tags};
use crate::graphql::document::OperationKind;
use crate::schema::{MutationRoot, QueryRoot};
use crate::upstream::Failure;

pub(super) async fn serve(
    gw: &Gateway,
    cache: &Arc<ReadCache>,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let Some(a) = ctx.admitted.as_ref() else {
        return Err(Error::new(ErrorType::InternalError));
    };
    let locales: Vec<&str> = a
        .header_locales
        .iter()
        .flatten()
        .map(|l| l.as_str())
        .collect();
    let key = CacheKey {
        endpoint: &a.endpoint.path,
        request: a.parsed.digest(),
        stage: a.stage.fallback.as_str(),
        locales: &locales,
        permissions: a.principal.policy().permissions.fingerprint(),
        credential: match a.endpoint.upstream.credential {
            crate::config::Credential::Forward => Some(
                <sha2::Sha256 as sha2::Digest>::digest(
                    session
                        .req_header()
                        .headers
                        .get(http::header::AUTHORIZATION)
                        .map_or(&b""[..], |v| v.as_bytes()),
                )
                .into(),
            ),
            crate::config::Credential::Replace(_) => None,
        },
    }
    .digest();
    let req = session.req_header();
    let settings = &cache.settings;
    let swr = window(
        req.headers
            .get(HYG_STALE_WHILE_REVALIDATE)
            .map(|v| v.as_bytes()),
        settings.stale_while_revalidate,
    );
    let sie = window(
        req.headers.get(HYG_STALE_IF_ERROR).map(|v| v.as_bytes()),
        settings.stale_if_error,
    );

    // Built only on a miss or a refresh, never on a hit.
    let build_fill = || fill_request(session.req_header(), ctx, a, settings);
    let existing = cache.get(&key).await;
    if let Some(e) = &existing {
        let age = e.age();
        if age <= e.ttl {
            cache.record("hit");
            return write(session, ctx, e, CacheStatus::Hit, age).await;
        }
        if age <= e.ttl + swr {
            cache.record("stale");
            // A refresh is an upstream request: it takes the origin budget, or waits for the
            // next stale hit (the client is served stale either way).
            if cache.wants_refresh(&key) && gw.origin_budget().await.is_ok() {
                cache.refresh(key, build_fill());
            }
            return write(session, ctx, e, CacheStatus::Stale, age).await;
        }
    }
    // The rest runs in a future of its own, so the hit path's stays small: each future is
    // moved (copied whole) into its caller's, and every request pays for the largest.
    Box::pin(miss(gw, cache, session, ctx, key, existing, (swr, sie))).await
}

/// A miss, or an entry too old to serve: the origin budget, the coalesced fill, and
/// stale-if-error. `windows` are the request's stale-while-revalidate and stale-if-error.
async fn miss(
    gw: &Gateway,
    cache: &Arc<ReadCache>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    key: crate::cache::KeyDigest,
    existing: Option<Arc<Stored>>,
    (swr, sie): (Duration, Duration),
) -> Result<()> {
    // The origin budget guard: over the CMS plan's rate, serve stale if there is any, else 429.
    if let Err(wait) = gw.origin_budget().await {
        if let Some(e) = existing.filter(|e| e.age() <= e.ttl + sie.max(swr)) {
            cache.record("stale");
            return write(session, ctx, &e, CacheStatus::Stale, e.age()).await;
        }
        let err = gw.refuse(
            ctx,
            crate::pipeline::Rejection::rate_limited(wait, "origin"),
        );
        return gw.write_error(session, ctx, &err).await;
    }
    let Some(a) = ctx.admitted.as_ref() else {
        return Err(Error::new(ErrorType::InternalError));
    };
    let fill = fill_request(session.req_header(), ctx, a, &cache.settings);
    ctx.upstream_started = Some(std::time::Instant::now());
    let (outcome, result) = cache.fetch_coalesced(key, fill).await;
    ctx.upstream_header = ctx.upstream_started.map(|s| s.elapsed());
    cache.record(match outcome {
        Outcome::Coalesced => "coalesced",
        _ => "miss",
    });
    // stale-if-error: an entry inside its window replaces an upstream failure.
    let stale = existing.filter(|e| e.age() <= e.ttl + sie);
    match result {
        Ok(stored) if stored.status < 500 && stored.status != 429 => {
            write(session, ctx, &stored, CacheStatus::Miss, Duration::ZERO).await
        }
        Ok(stored) => match stale {
            Some(e) => {
                if stored.status == 429 {
                    gw.metrics.stale_on_429.inc();
                }
                cache.record("stale");
                write(session, ctx, &e, CacheStatus::Stale, e.age()).await
            }
            None => write(session, ctx, &stored, CacheStatus::Miss, Duration::ZERO).await,
        },
        Err(err) => match stale {
            Some(e) => {
                cache.record("stale");
                write(session, ctx, &e, CacheStatus::Stale, e.age()).await
            }
            None => {
                let response = match err {
                    Failure::Busy => respond::fill_busy(),
                    e => respond::upstream(e.is_timeout()),
                };
                ctx.cache = CacheStatus::Miss;
                gw.write_error(session, ctx, &response).await
            }
        },
    }
}

/// The request a fill sends: only keyed headers and the gateway's own, so no unkeyed header can
/// change a stored answer. Built only on a miss or a refresh, never on a hit.
fn fill_request(
    req: &pingora::http::RequestHeader,
    ctx: &RequestCtx,
    a: &super::ctx::Admitted,
    settings: &crate::config::CacheSettings,
) -> FillRequest {
    let (endpoint, snap) = (&a.endpoint, &a.snapshot);
    let upstream = endpoint.upstream.clone();
    // `forward` mode: the CMS authorizes the client's own token (the key carries its digest).
    let request = super::forward::request(
        &upstream,
        a,
        &snap.cms,
        &req.method,
        &ctx.request_id,
        req.headers.get(http::header::AUTHORIZATION),
    );
    let (tags, ttl) = tags_and_ttl(a, snap.schema.as_deref(), settings);
    FillRequest {
        upstream,
        request,
        endpoint_kind: endpoint.kind.as_str(),
        tags,
        ttl,
    }
}

/// Models (and stages) the query reads, and the TTL: the shortest configured for those models.
fn tags_and_ttl(
    a: &crate::pipeline::Admitted,
    schema: Option<&crate::schema::SchemaMap>,
    settings: &crate::config::CacheSettings,
) -> (Tags, Duration) {
    let mut tags = Tags::default();
    let op = a.operation();
    for (i, f) in op.root_fields.iter().enumerate() {
        if let Some(QueryRoot::Read(m) | QueryRoot::ReadVersions(m)) =
            schema.and_then(|s| s.query_roots.get(f.name.as_str()))
        {
            tags.models.push(m.clone());
        }
        for r in &f.accesses {
            tags.models.push(r.model.clone());
            tags.stages.extend(r.stages.names.iter().cloned());
        }
        tags.stages.extend(f.extra_stages.iter().cloned());
        if let Some(s) = a.stage.per_field.get(i) {
            tags.stages.push(s.as_str().to_string());
        }
    }
    tags.models.sort();
    tags.models.dedup();
    tags.stages.sort();
    tags.stages.dedup();
    let ttl = tags
        .models
        .iter()
        .filter_map(|m| settings.model_ttl.get(&**m))
        .min()
        .copied()
        .unwrap_or(settings.default_ttl);
    (tags, ttl)
}

/// Writes a stored answer; `age` (the entry's, read once by the caller) goes out on a hit or a
/// stale answer.
async fn write(
    session: &mut Session,
    ctx: &mut RequestCtx,
    stored: &Stored,
    status: CacheStatus,
    age: Duration,
) -> Result<()> {
    // Room for these, the answer headers, CORS, and Pingora's Date and Connection.
    let mut map = HeaderMap::with_capacity(16);
    if let Some(ct) = &stored.content_type {
        map.insert(header::CONTENT_TYPE, ct.clone());
    }
    map.insert(header::CONTENT_LENGTH, stored.content_length().clone());
    map.insert(X_CACHE, HeaderValue::from_static(status.as_str()));
    map.insert(X_REQUEST_ID, super::headers::request_id(ctx)?);
    if matches!(status, CacheStatus::Hit | CacheStatus::Stale) {
        map.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    if let Some(ra) = &stored.retry_after {
        map.insert(header::RETRY_AFTER, ra.clone());
    }
    let mut h = super::headers::own_header(stored.status, map)?;
    // Only an answer that was fit to store is known to be a complete, error-free result.
    super::headers::answer_headers(ctx, &mut h, !stored.ttl.is_zero())?;
    super::headers::add_cors(ctx, &mut h)?;
    ctx.own_status = Some(stored.status);
    ctx.cache = status;
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(stored.body.clone()), true)
        .await
}

/// A mutation that succeeded through the gateway purges every entry that read its model.
pub(super) fn purge_after_mutation(gw: &Gateway, ctx: &RequestCtx) {
    let (Some(cache), Some(a)) = (&gw.cache, &ctx.admitted) else {
        return;
    };
    if a.operation().kind != OperationKind::Mutation {
        return;
    }
    let Some(schema) = a.snapshot.schema.as_deref() else {
        return;
    };
    let mut models: Vec<&str> = a
        .operation()
        .root_fields
        .iter()
        .filter_map(|f| match schema.mutation_roots.get(f.name.as_str()) {
            Some(MutationRoot::Model(_, m)) => Some(&**m),
            _ => None,
        })
        .collect();
    models.sort();
    models.dedup();
    for m in models {
        cache.purge(
            &Purge {
                model: Some(m.to_string()),
                ..Purge::default()
            },
            "mutation",
        );
    }
}
