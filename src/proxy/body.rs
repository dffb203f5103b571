//! Request bodies: read once, whole, within `limits.client_body_timeout`, refused past
//! `limits.max_body_bytes` (by Content-Length before a byte is read), and counted against one
//! process-wide budget of buffered bytes (`limits.max_buffered_body_bytes`), so many slow
//! uploads cannot hold more memory than that however many connections they open. A body
//! holds its share while it is read and checked and until the checked request has been written
//! upstream (or the request ends); `contentgate_request_body_bytes` shows the bytes held. Only
//! bytes that arrived are counted: a declared length reserves nothing.
//!
//! The budget counts what the buffer allocated (its capacity, which grows by doubling from
//! the first chunk, up to the limit), so it bounds the memory, not only the bytes received.
//! What the budget does not count, per body in flight: its parse (at most
//! `graphql::request::MAX_JSON_VALUES` values, ~15 MB), the re-serialization (about the body's
//! size) and the one-buffer copy `UpstreamRequest::wire` builds (header + body), dropped once
//! it is written. Pingora replays
//! nothing: the gateway sends the checked request itself ([`super::forward::pass_through`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;
use prometheus::IntGauge;

use crate::config::MAX_FORWARDED_BODY_BYTES;
use crate::graphql::GraphqlError;
use crate::pipeline::Rejection;

/// The process-wide budget of buffered request-body bytes.
pub struct BodyBudget {
    held: AtomicUsize,
    max: usize,
    gauge: IntGauge,
}

impl BodyBudget {
    pub fn new(max: usize, gauge: IntGauge) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            held: AtomicUsize::new(0),
            max,
            gauge,
        })
    }

    /// Bytes held by bodies in flight.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        let mut cur = self.held.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|v| *v <= self.max) else {
                return false;
            };
            match self
                .held
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.gauge.add(n as i64);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
        self.gauge.sub(n as i64);
    }
}

/// A body's share of the budget, given back when the request's context drops.
pub struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyPermit {
    pub fn empty(budget: &Arc<BodyBudget>) -> BodyPermit {
        BodyPermit {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Takes `n` more bytes; `false` (nothing taken) when the budget cannot cover them.
    fn grow(&mut self, n: usize) -> bool {
        let ok = self.budget.take(n);
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give(self.bytes);
        }
    }
}

/// Reads the whole request body into memory held by `permit` (taken as the bytes arrive).
/// `Err` is the refusal: too large (413), too slow (408), or the process's budget exhausted
/// (503).
pub async fn read(
    session: &mut Session,
    limit: usize,
    timeout: std::time::Duration,
    permit: &mut BodyPermit,
) -> Result<std::result::Result<Bytes, Rejection>> {
    let limit = limit.min(MAX_FORWARDED_BODY_BYTES);
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Ok(Err(Rejection::Graphql(GraphqlError::BodyTooLarge {
            limit,
        })));
    }
    // Nothing is allocated, nor budget taken, for a length only declared: headers alone must
    // hold neither memory nor budget (many such requests would refuse every body). The buffer
    // is allocated as bytes arrive, and the budget follows its capacity.
    let mut buf = BytesMut::new();
    // One deadline for the whole body (a slow POST), not per read.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, session.read_request_body()).await else {
            return Ok(Err(Rejection::Graphql(GraphqlError::BodyTimeout(timeout))));
        };
        let Some(chunk) = next? else { break };
        if buf.len() + chunk.len() > limit {
            return Ok(Err(Rejection::Graphql(GraphqlError::BodyTooLarge {
                limit,
            })));
        }
        let needed = buf.len() + chunk.len();
        if needed > buf.capacity() {
            buf.reserve(needed.max(buf.capacity() * 2).min(limit) - buf.len());
        }
        let beyond = buf.capacity().saturating_sub(permit.bytes);
        if beyond > 0 && !permit.grow(beyond) {
            return Ok(Err(Rejection::BodyBudget));
        }
        buf.extend_from_slice(&chunk);
        // The framing says the body is whole (HTTP/1: the declared length or the last chunk
        // was read; HTTP/2: END_STREAM and nothing left buffered): no read is needed to learn
        // that nothing follows.
        if session.is_body_done() {
            break;
        }
    }
    Ok(Ok(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let gauge = IntGauge::new("t_body_bytes", "t").unwrap_or_else(|_| unreachable!());
        let b = BodyBudget::new(100, gauge.clone());
        let mut one = BodyPermit::empty(&b);
        let mut two = BodyPermit::empty(&b);
        assert!(one.grow(60));
        assert!(!two.grow(41), "over the budget");
        assert!(two.grow(40));
        assert_eq!((b.held(), gauge.get()), (100, 100));
        drop(one);
        assert_eq!((b.held(), gauge.get()), (40, 40));
        drop(two);
        assert_eq!((b.held(), gauge.get()), (0, 0));
    }
}
