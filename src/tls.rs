//! TLS termination: a certificate resolver that serves the current certificate and key from
//! files and swaps them when the files change (a cert-manager renewal, a Secret update), with
//! no restart and no dropped connection. The files are re-read and compared on a timer; a pair
//! that fails to load is logged and the previous one keeps serving.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use sha2::{Digest, Sha256};

pub struct ReloadingCert {
    cert_path: String,
    key_path: String,
    current: ArcSwap<CertifiedKey>,
    digest: Mutex<[u8; 32]>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish()
    }
}

fn read_digest(cert: &str, key: &str) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    h.update(std::fs::read(cert).map_err(|e| format!("cannot read {cert}: {e}"))?);
    h.update(std::fs::read(key).map_err(|e| format!("cannot read {key}: {e}"))?);
    Ok(h.finalize().into())
}

fn load(cert: &str, key: &str) -> Result<CertifiedKey, String> {
    let (chain, key_der) = pingora::tls::load_certs_and_key_files(cert, key)
        .map_err(|e| format!("cannot load {cert} / {key}: {e}"))?
        .ok_or_else(|| format!("{cert} holds no certificate or {key} no private key"))?;
    let provider = CryptoProvider::get_default().ok_or("no rustls crypto provider installed")?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("unusable private key {key}: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

impl ReloadingCert {
    pub fn load(cert_path: &str, key_path: &str) -> Result<Self, String> {
        pingora::tls::install_default_crypto_provider();
        let digest = read_digest(cert_path, key_path)?;
        let certified = load(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_string(),
            key_path: key_path.to_string(),
            current: ArcSwap::from_pointee(certified),
            digest: Mutex::new(digest),
        })
    }

    /// Re-reads the files; swaps in a changed pair that loads. Returns whether it swapped.
    pub fn reload_if_changed(&self) -> bool {
        let Ok(digest) = read_digest(&self.cert_path, &self.key_path) else {
            return false;
        };
        let mut current = self.digest.lock();
        if *current == digest {
            return false;
        }
        match load(&self.cert_path, &self.key_path) {
            Ok(c) => {
                self.current.store(Arc::new(c));
                *current = digest;
                tracing::info!(cert = %self.cert_path, "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(cert = %self.cert_path, error = %e, "TLS certificate reload failed; keeping the previous one");
                false
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Polls every listener's certificate files.
pub struct CertWatcher {
    pub certs: Vec<Arc<ReloadingCert>>,
    pub interval: Duration,
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    for c in &self.certs {
                        c.reload_if_changed();
                    }
                }
            }
        }
    }
}
