//! Reading the gateway's `/metrics`: one series, waiting for a value, the policy generation.
#![allow(unused_imports)]
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

impl TestGateway {
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Value of one sample line (`name{labels}`) in /metrics, 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until a metric reaches at least `min`: request metrics are recorded in the logging
    /// phase, just after the response has been sent.
    pub async fn wait_metric(&self, series: &str, min: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(series).await;
            if v >= min || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the policy generation reaches `generation`.
    pub async fn wait_generation(&self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric("contentgate_policy_generation").await < generation as f64 {
            if Instant::now() > deadline {
                panic!(
                    "policy generation {generation} not reached; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
