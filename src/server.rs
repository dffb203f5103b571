//! Building the Pingora server from a validated [`Config`]: the proxy service with its
//! listeners, the admin service, the policy watcher and readiness tracking.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::Opt;
use pingora::server::{ExecutionPhase, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::sync::broadcast;

use crate::admin::{Admin, Health};
use crate::cache::ReadCache;
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::watch::PolicyWatcher;
use crate::proxy::Gateway;
use crate::tls::{CertWatcher, ReloadingCert};
use crate::upstream::UpstreamClient;
use pingora::listeners::tls::TlsSettings;

/// Everything a running gateway shares between its services.
pub struct Runtime {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<PolicyStore>,
    pub health: Arc<Health>,
    pub cache: Option<Arc<ReadCache>>,
    /// `[cluster]`: the replica's link to the others through Redis.
    pub cluster: Option<Arc<Cluster>>,
    /// The upstream client of the pass-through and the fills (one keep-alive pool).
    pub upstream: Arc<UpstreamClient>,
}

impl Runtime {
    /// Loads the first policy snapshot; any error fails start-up with every problem listed.
    pub fn load(config: Config) -> Result<Runtime, ConfigErrors> {
        let metrics = Arc::new(Metrics::new());
        metrics.seed_auth_results(&crate::auth::AuthError::REASONS);
        metrics.register(Box::new(crate::telemetry::LogMetrics::new()));
        let cluster = match &config.cluster {
            Some(settings) => Some(Cluster::new(settings.clone(), metrics.clone()).map_err(
                |e| ConfigErrors(vec![ConfigError::new(&config.path, None, "cluster", e)]),
            )?),
            None => None,
        };
        let store = match &cluster {
            None => PolicyStore::load(&config.path, metrics.clone(), config.schema_upstream())?,
            Some(cluster) => clustered_store(&config, cluster, &metrics)?,
        };
        let upstream = Arc::new(UpstreamClient::for_config(&config));
        let cache = config
            .cache
            .enabled
            .then(|| ReadCache::new(config.cache.clone(), upstream.clone(), metrics.clone()));
        Ok(Runtime {
            config: Arc::new(config),
            metrics,
            store,
            health: Arc::new(Health::default()),
            cache,
            cluster,
            upstream,
        })
    }
}

/// A replica's first snapshot: from the set in Redis when it can be read and compiles; else a
/// bootstrap that grants nothing (the replica stays unready and refuses tokens until its first
/// sync; the policies folder is not the source of a cluster).
fn clustered_store(
    config: &Config,
    cluster: &Arc<Cluster>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<PolicyStore>, ConfigErrors> {
    if let Some(set) = cluster.initial_set(STARTUP_SYNC_WAIT) {
        match PolicyStore::load_with(
            &config.path,
            metrics.clone(),
            config.schema_upstream(),
            Some(set.texts.clone()),
        ) {
            Ok(store) => {
                cluster.started_with(set.id(), true);
                return Ok(store);
            }
            Err(e) => {
                tracing::error!(target: "audit", event = "cluster_policy_refused", errors = %e, "the policy set in Redis does not compile; starting unready on a bootstrap policy that grants nothing");
                cluster.started_with(set.id(), false);
            }
        }
    }
    let inputs = crate::policy::compile::Inputs::read(&config.path)?;
    let cms = crate::config::cms_from_file(&inputs.file.cms)
        .map_err(|m| ConfigErrors(vec![ConfigError::new(&config.path, None, "cms", m)]))?;
    let bootstrap = crate::policy::PolicyTexts::bootstrap(&cms);
    PolicyStore::load_with(
        &config.path,
        metrics.clone(),
        config.schema_upstream(),
        Some(bootstrap),
    )
}

/// How long start-up waits for Redis before starting unready.
const STARTUP_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Builds the server with the gateway's services (the demo adds its sample API to it).
pub fn build(rt: &Runtime, upgrade: bool) -> Result<Server, String> {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, crate::config::server_conf(&rt.config));
    server.bootstrap();

    let gateway = Gateway {
        config: rt.config.clone(),
        store: rt.store.clone(),
        metrics: rt.metrics.clone(),
        cache: rt.cache.clone(),
        limiters: Arc::new(crate::ratelimit::Limiters::new(rt.config.rate_limits)),
        cluster: rt.cluster.clone(),
        upstream: rt.upstream.clone(),
        bodies: crate::proxy::body::BodyBudget::new(
            rt.config.limits.max_buffered_body_bytes,
            rt.metrics.request_body_bytes.clone(),
        ),
    };
    if let Some(cluster) = &rt.cluster {
        cluster.start(crate::cluster::sync::Targets {
            store: rt.store.clone(),
            cache: rt.cache.clone(),
        });
    }
    // Every accepted connection gets a whole-header deadline (slowloris) under the proxy.
    let header_timeout = rt.config.limits.client_header_timeout;
    let mut app = pingora::proxy::http_proxy(&server.configuration, gateway);
    // HTTP/2 has no blank line to time: an idle h2 connection (no stream in flight — which
    // includes one whose HEADERS never completes) is closed after the header timeout.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(header_timeout);
    app.server_options = Some(options);
    let mut proxy = Service::new(
        "contentgate proxy".to_string(),
        crate::proxy::deadline::Guarded {
            app: Arc::new(app),
            header_timeout,
        },
    );
    let buffers = L4BufferSettings {
        read: Some(rt.config.server.read_buffer_bytes),
        write: Some(rt.config.server.write_buffer_bytes),
    };
    let mut certs = Vec::new();
    for l in &rt.config.listeners {
        let mut listener = ListenerConfig::tcp(l.address.clone()).l4_buffer(buffers);
        if let Some((cert, key)) = &l.tls {
            let (cert, key) = (cert.display().to_string(), key.display().to_string());
            let resolver = Arc::new(ReloadingCert::load(&cert, &key)?);
            let mut tls = TlsSettings::intermediate(&cert, &key)
                .map_err(|e| format!("TLS listener {}: {e}", l.address))?;
            tls.set_cert_resolver(resolver.clone());
            tls.enable_h2();
            listener = listener.tls(tls);
            certs.push(resolver);
        }
        proxy.add_listener(listener);
    }
    server.add_service(proxy);
    if !certs.is_empty() {
        server.add_service(background_service(
            "certificate watcher",
            CertWatcher {
                certs,
                interval: rt.config.poll_interval,
            },
        ));
    }

    if let Some(addr) = &rt.config.admin {
        // The admin listener gets the same whole-header deadline as the proxy.
        let mut admin = Service::new(
            "contentgate admin".to_string(),
            crate::proxy::deadline::Guarded {
                app: Arc::new(pingora::apps::http_app::HttpServer::new_app(
                    Admin::new(
                        rt.metrics.clone(),
                        rt.store.clone(),
                        rt.health.clone(),
                        rt.cache.clone(),
                        rt.config.secrets.clone(),
                    )
                    .in_cluster(rt.cluster.clone())
                    .with_management(
                        Arc::new(crate::manage::Manager::for_gateway(
                            rt.config.path.clone(),
                            rt.config.policies_dir.clone(),
                            rt.store.clone(),
                            rt.cluster.clone(),
                            rt.config.secrets.read_only,
                        )),
                        endpoints_list(&rt.config),
                    ),
                )),
                header_timeout,
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

    let mut upstreams: Vec<Arc<crate::config::Upstream>> = Vec::new();
    for e in &rt.config.endpoints {
        if !upstreams.iter().any(|u| Arc::ptr_eq(u, &e.upstream)) {
            upstreams.push(e.upstream.clone());
        }
    }
    server.add_service(background_service(
        "upstream resolver",
        crate::upstream::DnsRefresher {
            upstreams,
            client: rt.upstream.clone(),
            metrics: rt.metrics.clone(),
        },
    ));

    let readiness = ReadinessTracker {
        phases: Mutex::new(Some(server.watch_execution_phase())),
        health: rt.health.clone(),
        listeners: rt
            .config
            .listeners
            .iter()
            .filter_map(|l| l.address.parse().ok())
            .collect(),
    };
    server.add_service(background_service("readiness", readiness));
    Ok(server)
}

/// Flips readiness off as soon as a graceful shutdown or upgrade begins, so the load balancer
/// stops routing here while in-flight requests finish during the grace period.
struct ReadinessTracker {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    health: Arc<Health>,
    /// The proxy's listening addresses: ready only once every one accepts connections.
    listeners: Vec<std::net::SocketAddr>,
}

/// Waits until every listener accepts a TCP connection (a wildcard address is dialled on
/// loopback). Pingora binds each service's listeners in that service's own runtime, so the
/// snapshot being loaded says nothing about whether traffic can arrive yet.
async fn listeners_bound(addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        let mut target = *addr;
        if target.ip().is_unspecified() {
            target.set_ip(match target {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        while tokio::net::TcpStream::connect(target).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl BackgroundService for ReadinessTracker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = listeners_bound(&self.listeners) => {
                tracing::info!("listeners bound: ready");
                self.health.set_ready(true);
            }
        }
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

/// The endpoints with their full URLs: under `[admin] public_url`, else the first listener.
pub fn endpoints_list(config: &crate::config::Config) -> serde_json::Value {
    let base = config
        .secrets
        .public_url
        .clone()
        .or_else(|| {
            config.listeners.first().map(|l| {
                let scheme = if l.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", l.address)
            })
        })
        .unwrap_or_default();
    let base = base.trim_end_matches('/');
    serde_json::Value::Array(
        config
            .endpoints
            .iter()
            .map(|e| {
                serde_json::json!({
                    "path": e.path,
                    "kind": e.kind.as_str(),
                    "url": format!("{base}{}", e.path),
                })
            })
            .collect(),
    )
}
