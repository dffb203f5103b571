//! Cluster-wide rate limits: GCRA in one Lua script (one round trip), so the configured number
//! is the cluster's number. Redis's clock decides (`TIME`), so replicas' clocks do not matter.
//! When Redis cannot be asked within `command_timeout`, the replica decides locally with the
//! limit divided by `expected_replicas`, and counts the fallback.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::Cluster;
use crate::ratelimit::RateLimit;

/// KEYS[1]: the key's theoretical arrival time (µs). ARGV: emission interval (µs), burst
/// tolerance (µs). Returns 0 when admitted, else the wait in µs.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1])
local allow_at = new_tat - tonumber(ARGV[2])
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return 0
"#,
    )
});

impl Cluster {
    /// One request against `limit` for `key` in `scope` (token, ip, origin), cluster-wide.
    /// `Err` carries the wait.
    pub async fn check_rate(
        &self,
        scope: &'static str,
        key: &str,
        limit: RateLimit,
    ) -> Result<(), Duration> {
        let interval = 1_000_000 / u64::from(limit.requests_per_second.max(1));
        // GCRA's tolerance: `burst` requests may arrive at once.
        let tolerance = interval * u64::from(limit.burst.max(1));
        let redis_key = self.keys.rate(scope, key);
        let mut conn = self.connection();
        let timeout = self.settings.command_timeout;
        // While the poll finds Redis unreachable, no request waits a command timeout for it.
        let asked = match self.up.load(std::sync::atomic::Ordering::Acquire) {
            true => {
                self.run(async move {
                    tokio::time::timeout(
                        timeout,
                        GCRA.key(&redis_key)
                            .arg(interval)
                            .arg(tolerance)
                            .invoke_async::<u64>(&mut conn),
                    )
                    .await
                })
                .await
            }
            false => None,
        };
        match asked {
            Some(Ok(Ok(0))) => Ok(()),
            Some(Ok(Ok(wait_us))) => Err(Duration::from_micros(wait_us)),
            failed => {
                if failed.is_some() {
                    self.metrics
                        .cluster_errors
                        .with_label_values(&["rate_limit"])
                        .inc();
                }
                self.metrics
                    .rate_limit_fallbacks
                    .with_label_values(&[scope])
                    .inc();
                let divided = RateLimit {
                    requests_per_second: (limit.requests_per_second
                        / self.settings.expected_replicas)
                        .max(1),
                    burst: (limit.burst / self.settings.expected_replicas).max(1),
                };
                self.fallback
                    .token(&Arc::from(format!("{scope}:{key}")), Some(divided))
            }
        }
    }
}
