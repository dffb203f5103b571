//! Rate limits: per token (its registry entry's limit, else a default), per client IP for
//! public requests, and the origin budget guard — a cap on uncached requests per second to the
//! CMS (the plan's limit). Over the budget the cache serves stale where it can, otherwise 429;
//! cached answers are never limited by it.
//!
//! Limiters are GCRA (governor), one per key, held in bounded moka caches that forget idle keys,
//! so memory stays bounded whatever the traffic.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Keys idle this long are forgotten (their bucket would be full again anyway).
const IDLE: Duration = Duration::from_secs(600);
const MAX_KEYS: u64 = 200_000;

/// A token bucket: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub token_default: Option<RateLimit>,
    pub public_per_ip: Option<RateLimit>,
    pub origin_per_second: Option<RateLimit>,
    /// Refused requests (401, 403, 400, …) per client address: past it, every request from
    /// that address is answered 429 before authentication, for as long as the bucket needs to
    /// refill. A refusal is cheap to ask for and may cost a signature verification.
    pub refused_per_ip: Option<RateLimit>,
    /// IPv6 clients are keyed by this prefix (one /64 is one subscriber, not 2^64 clients).
    pub ipv6_prefix: u8,
}

/// A client address as the limiters and address rules see it: IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`, what a dual-stack listener reports) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The limiter key of a client address: IPv4 as is, IPv6 truncated to `prefix` bits.
pub fn client_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let prefix = u32::from(prefix.min(128));
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((bits & mask).into())
        }
        v4 => v4,
    }
}

pub struct Limiters {
    settings: RateSettings,
    tokens: moka::sync::Cache<(Arc<str>, RateLimit), Arc<DefaultDirectRateLimiter>>,
    ips: moka::sync::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
    refusals: moka::sync::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
    /// Addresses over their refusal budget, until when.
    blocked: moka::sync::Cache<IpAddr, std::time::Instant>,
    /// The latest end of any block so far, in nanoseconds since `epoch`: a request arriving
    /// after it cannot be from a blocked address, so it skips the lookup.
    blocks_end: AtomicU64,
    epoch: Instant,
    origin: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

fn limiter(l: RateLimit) -> DefaultDirectRateLimiter {
    let rps = NonZeroU32::new(l.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(l.burst).unwrap_or(NonZeroU32::MIN);
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
            refusals: moka::sync::Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(IDLE)
                .build(),
            blocked: moka::sync::Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(IDLE)
                .build(),
            origin: settings.origin_per_second.map(limiter),
            clock: DefaultClock::default(),
            blocks_end: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
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
        let key = client_key(ip, self.settings.ipv6_prefix);
        let l = self.ips.get_with(key, || Arc::new(limiter(limit)));
        self.check(&l)
    }

    /// Before anything else is done for a request from `ip` that arrived at `now`:
    /// `Err(wait)` while the address is over its refusal budget.
    pub fn admit_address(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.settings.refused_per_ip.is_none()
            || self.since_epoch(now) >= self.blocks_end.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let key = client_key(ip, self.settings.ipv6_prefix);
        match self.blocked.get(&key) {
            Some(until) => {
                if until > now {
                    Err(until - now)
                } else {
                    self.blocked.invalidate(&key);
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// A request from `ip` was refused: it spends the address's refusal budget, and an
    /// exhausted budget blocks the address until the bucket has room again.
    pub fn refused(&self, ip: IpAddr) {
        let Some(limit) = self.settings.refused_per_ip else {
            return;
        };
        let key = client_key(ip, self.settings.ipv6_prefix);
        let l = self.refusals.get_with(key, || Arc::new(limiter(limit)));
        if let Err(wait) = self.check(&l) {
            let until = Instant::now() + wait;
            // Raised before the entry is visible: a request that sees the old end arrived
            // before this block, as a request racing the refusal always could.
            self.blocks_end
                .fetch_max(self.since_epoch(until), Ordering::Relaxed);
            self.blocked.insert(key, until);
        }
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
            refused_per_ip: None,
            ipv6_prefix: 64,
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

    #[test]
    fn addresses_are_canonical_and_ipv6_is_keyed_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(ip("::ffff:9.9.9.9"), 64), ip("9.9.9.9"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1"), 64),
            client_key(ip("2001:db8:1:2:bbbb::9"), 64)
        );
        assert_eq!(client_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
    }

    #[test]
    fn an_address_over_its_refusal_budget_is_blocked() {
        let l = Limiters::new(RateSettings {
            token_default: None,
            public_per_ip: None,
            origin_per_second: None,
            refused_per_ip: Some(RateLimit {
                requests_per_second: 1,
                burst: 2,
            }),
            ipv6_prefix: 64,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now;
        l.refused(a);
        l.refused(a);
        assert!(l.admit_address(a, now()).is_ok());
        l.refused(a);
        let wait = l.admit_address(a, now()).unwrap_err();
        assert!(l.admit_address("10.0.0.2".parse().unwrap(), now()).is_ok());
        // Past the block's end the address is admitted again, without a lookup.
        assert!(l
            .admit_address(a, now() + wait + Duration::from_millis(1))
            .is_ok());
        assert!(l.admit_address(a, now()).is_err());
    }
}
