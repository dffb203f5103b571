//! The log sink's counts as Prometheus metrics (`contentgate_log_lines_dropped_total{cause}`,
//! `contentgate_log_buffered_bytes`), collected from the process's sink at each scrape.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGauge, Opts};

const LOG_DROPPED: (&str, &str) = (
    "contentgate_log_lines_dropped_total",
    "Log lines dropped, by cause: access_full (an access line found its three quarters of [log] buffer_bytes full), full (another line found the whole buffer full), stderr (the write failed, or did not finish within 0.5 s at exit).",
);
const LOG_BUFFERED: (&str, &str) = (
    "contentgate_log_buffered_bytes",
    "Bytes of log lines waiting for the log writer thread.",
);

/// The log sink's counts as metrics, read at each scrape (registered by the app with
/// `Metrics::register`).
pub struct LogMetrics {
    descs: Vec<prometheus::core::Desc>,
}

impl LogMetrics {
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let dropped = IntCounterVec::new(Opts::new(LOG_DROPPED.0, LOG_DROPPED.1), &["cause"])
            .expect("valid metric");
        let held = IntGauge::new(LOG_BUFFERED.0, LOG_BUFFERED.1).expect("valid metric");
        let descs = [dropped.desc(), held.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        LogMetrics { descs }
    }
}

impl Collector for LogMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut out = Vec::with_capacity(2);
        if let Ok(dropped) = IntCounterVec::new(Opts::new(LOG_DROPPED.0, LOG_DROPPED.1), &["cause"])
        {
            for (cause, n) in super::dropped_lines() {
                dropped.with_label_values(&[cause]).inc_by(n);
            }
            out.extend(dropped.collect());
        }
        if let Ok(held) = IntGauge::new(LOG_BUFFERED.0, LOG_BUFFERED.1) {
            held.set(i64::try_from(super::buffered_bytes()).unwrap_or(i64::MAX));
            out.extend(held.collect());
        }
        out
    }
}

impl Default for LogMetrics {
    fn default() -> Self {
        Self::new()
    }
}
