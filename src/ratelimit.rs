//! Rate limits: per token (its registry entry's limit, else a default), per client IP for
//! public requests, and the origin budget guard — a cap on uncached requests per second to the
//! CMS (the plan's limit). Over the budget the cache serves stale where it can, otherwise 429;
//! cached answers are never limited by it.
//!
//! Limiters are GCRA (governor), one per key, held in bounded moka caches that forget idle keys,
//! so memory stays bounded whatever the traffic.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::policy::RateLimit;

/// Keys idle this long are forgotten (their bucket would be full again anyway).
const IDLE: Duration = Duration::from_secs(600);
const MAX_KEYS: u64 = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub token_default: Option<RateLimit>,
    pub public_per_ip: Option<RateLimit>,
    pub origin_per_second: Option<RateLimit>,
}

pub struct Limiters {
    settings: RateSettings,
    tokens: moka::sync::Cache<(Arc<str>, RateLimit), Arc<DefaultDirectRateLimiter>>,
    ips: moka::sync::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
    origin: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

fn limiter(l: RateLimit) -> DefaultDirectRateLimiter {
    let rps = NonZeroU32::new(l.requests_per_second.max(1)).expect("max(1) is non-zero");
    let burst = NonZeroU32::new(l.burst.max(1)).expect("max(1) is non-zero");
    RateLimiter::direct(Quota::per_second(rps).allow_burst(burst))
}

impl Limiters {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            settings,
            tokens: moka::sync::Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(IDLE)
                .build(),
            ips: moka::sync::Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(IDLE)
                .build(),
            origin: settings.origin_per_second.map(limiter),
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, l: &DefaultDirectRateLimiter) -> Result<(), Duration> {
        l.check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// A token's request: its own limit, else the default for tokens. `Err` carries the wait.
    pub fn token(&self, jti: &Arc<str>, own: Option<RateLimit>) -> Result<(), Duration> {
        let Some(limit) = own.or(self.settings.token_default) else {
            return Ok(());
        };
        let l = self
            .tokens
            .get_with((jti.clone(), limit), || Arc::new(limiter(limit)));
        self.check(&l)
    }

    /// A public request from `ip`.
    pub fn public(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limit) = self.settings.public_per_ip else {
            return Ok(());
        };
        let l = self.ips.get_with(ip, || Arc::new(limiter(limit)));
        self.check(&l)
    }

    /// One uncached request to the upstream.
    pub fn origin(&self) -> Result<(), Duration> {
        match &self.origin {
            Some(l) => self.check(l),
            None => Ok(()),
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_burst_and_tell_the_wait() {
        let l = Limiters::new(RateSettings {
            token_default: Some(RateLimit {
                requests_per_second: 1,
                burst: 2,
            }),
            public_per_ip: None,
            origin_per_second: None,
        });
        let jti: Arc<str> = Arc::from("j");
        assert!(l.token(&jti, None).is_ok());
        assert!(l.token(&jti, None).is_ok());
        let wait = l.token(&jti, None).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(retry_after_secs(wait) >= 1);
        // Its own limit wins over the default, in its own bucket.
        assert!(l
            .token(
                &jti,
                Some(RateLimit {
                    requests_per_second: 100,
                    burst: 100
                })
            )
            .is_ok());
        // Public and origin limits are off unless configured.
        assert!(l.public("127.0.0.1".parse().unwrap()).is_ok());
        assert!(l.origin().is_ok());
    }
}
