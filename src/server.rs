//! Building the Pingora server from a validated [`Config`]: the proxy service with its
//! listeners, the admin service, the policy watcher and readiness tracking.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::sync::broadcast;

use crate::admin::{Admin, Health};
use crate::cache::ReadCache;
use crate::config::{Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::watch::PolicyWatcher;
use crate::proxy::Gateway;
use crate::upstream::UpstreamClient;

/// Everything a running gateway shares between its services.
pub struct Runtime {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<PolicyStore>,
    pub health: Arc<Health>,
    pub cache: Option<Arc<ReadCache>>,
}

impl Runtime {
    /// Loads the first policy snapshot; any error fails start-up with every problem listed.
    pub fn load(config: Config) -> Result<Runtime, ConfigErrors> {
        let metrics = Arc::new(Metrics::new());
        let store = PolicyStore::load(&config.path, metrics.clone(), config.schema_upstream())?;
        let cache = config.cache.enabled.then(|| {
            ReadCache::new(
                config.cache.clone(),
                Arc::new(UpstreamClient::new()),
                metrics.clone(),
            )
        });
        Ok(Runtime {
            config: Arc::new(config),
            metrics,
            store,
            health: Arc::new(Health::default()),
            cache,
        })
    }
}

/// Pingora settings for this config: per-instance pid file and upgrade socket (the /tmp
/// defaults collide between two instances), a grace period that fits Kubernetes.
pub fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    let _ = std::fs::create_dir_all(&s.runtime_dir);
    ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs()),
        pid_file: s.runtime_dir.join("contentgate.pid").display().to_string(),
        upgrade_sock: s.runtime_dir.join("upgrade.sock").display().to_string(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ..ServerConf::default()
    }
}

/// Builds the server with the gateway's services. `extra` lets the demo add its sample API.
pub fn build(rt: &Runtime, upgrade: bool) -> Server {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&rt.config));
    server.bootstrap();

    let gateway = Gateway {
        config: rt.config.clone(),
        store: rt.store.clone(),
        metrics: rt.metrics.clone(),
        cache: rt.cache.clone(),
        limiters: Arc::new(crate::ratelimit::Limiters::new(rt.config.rate_limits)),
    };
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "contentgate proxy",
    );
    let buffers = L4BufferSettings {
        read: None,
        write: Some(rt.config.server.write_buffer_bytes),
    };
    for addr in &rt.config.listeners {
        proxy.add_listener(ListenerConfig::tcp(addr.clone()).l4_buffer(buffers));
    }
    server.add_service(proxy);

    if let Some(addr) = &rt.config.admin {
        let mut admin = Service::new(
            "contentgate admin".to_string(),
            Admin {
                metrics: rt.metrics.clone(),
                store: rt.store.clone(),
                health: rt.health.clone(),
                cache: rt.cache.clone(),
                secrets: rt.config.secrets.clone(),
            },
        );
        admin.add_tcp(addr);
        admin.threads = Some(1);
        server.add_service(admin);
    }

    let watcher = background_service(
        "policy watcher",
        PolicyWatcher {
            store: rt.store.clone(),
            poll_interval: rt.config.poll_interval,
        },
    );
    server.add_service(watcher);

    let readiness = ReadinessTracker {
        phases: Mutex::new(Some(server.watch_execution_phase())),
        health: rt.health.clone(),
    };
    server.add_service(background_service("readiness", readiness));
    rt.health.set_ready(true);
    server
}

/// Flips readiness off as soon as a graceful shutdown or upgrade begins, so the load balancer
/// stops routing here while in-flight requests finish during the grace period.
struct ReadinessTracker {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    health: Arc<Health>,
}

#[async_trait]
impl BackgroundService for ReadinessTracker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.health.set_ready(false);
                    break;
                }
                phase = phases.recv() => match phase {
                    Ok(ExecutionPhase::GracefulTerminate | ExecutionPhase::GracefulUpgradeTransferringFds | ExecutionPhase::ShutdownStarted) => {
                        tracing::info!("shutdown started: readiness now fails");
                        self.health.set_ready(false);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }
}
