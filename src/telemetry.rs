//! Tracing setup: JSON lines by default (one access-log line per request on target `access`,
//! audit events on target `audit`), text for humans. `RUST_LOG` overrides the configured level.
//! Pingora logs through the `log` crate; those records are bridged into the same output.

use tracing_subscriber::EnvFilter;

pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, demo) keeps the first subscriber; that is fine.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
