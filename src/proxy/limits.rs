//! The limits a request is asked against, in one place: the token's or the address's rate limit
//! and the origin budget, local (governor) for a gateway on its own, cluster-wide (Redis) in a
//! cluster; and, in a cluster, the fail-closed rule for token requests on a stale policy.

use std::net::IpAddr;
use std::time::Duration;

use super::Gateway;
use crate::auth::Principal;
use crate::pipeline::Rejection;

impl Gateway {
    /// Asked as soon as the principal is known, before the document is parsed.
    pub(super) async fn limit(
        &self,
        principal: &Principal,
        client_ip: Option<IpAddr>,
    ) -> Result<(), Rejection> {
        let settings = &self.config.rate_limits;
        let limited = match (principal, &self.cluster) {
            (Principal::Token(_), Some(c)) if c.refuses_tokens() => {
                return Err(Rejection::PolicyStale)
            }
            (Principal::Token(t), None) => self.limiters.token(&t.jti, t.rate_limit).err(),
            (Principal::Token(t), Some(c)) => match t.rate_limit.or(settings.token_default) {
                Some(l) => c.check_rate("token", &t.jti, l).await.err(),
                None => None,
            },
            (Principal::Public(_), None) => client_ip.and_then(|ip| self.limiters.public(ip).err()),
            (Principal::Public(_), Some(c)) => match (client_ip, settings.public_per_ip) {
                (Some(ip), Some(l)) => {
                    let key = crate::ratelimit::client_key(ip, settings.ipv6_prefix).to_string();
                    c.check_rate("ip", &key, l).await.err()
                }
                _ => None,
            },
        };
        match limited {
            Some(wait) => Err(Rejection::rate_limited(
                wait,
                match principal {
                    Principal::Token(_) => "token",
                    Principal::Public(_) => "ip",
                },
            )),
            None => Ok(()),
        }
    }

    /// One uncached request to the upstream against the origin budget; `Err` carries the wait.
    pub(super) async fn origin_budget(&self) -> Result<(), Duration> {
        match (&self.cluster, self.config.rate_limits.origin_per_second) {
            (Some(c), Some(l)) => c.check_rate("origin", "upstream", l).await,
            (Some(_), None) => Ok(()),
            (None, _) => self.limiters.origin(),
        }
    }
}
