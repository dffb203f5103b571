//! The current snapshot behind `ArcSwap`, and reloading it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::compile::{compile, Inputs};
use super::{PolicyTexts, Snapshot};
use crate::config::{ConfigErrors, Upstream};
use crate::metrics::Metrics;
use crate::schema::SchemaMap;

pub struct PolicyStore {
    current: ArcSwap<Snapshot>,
    config_path: PathBuf,
    metrics: Arc<Metrics>,
    /// Serializes reloads (watcher, timer and SIGHUP may fire together).
    reload_lock: Mutex<()>,
    /// The schema map introspected at start-up, used while there is no SDL file.
    introspected: Option<Arc<SchemaMap>>,
    /// Inputs digest of the last rejected reload: the same broken files are not compiled (and
    /// logged) again at every poll.
    last_rejected: Mutex<Option<([u8; 32], ConfigErrors)>>,
    /// The start-up-only sections of gateway.toml the process runs with.
    started_with: [u8; 32],
    /// The shared policy set (cluster) read instead of the folder's policy files.
    shared: Mutex<Option<Arc<PolicyTexts>>>,
}
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied { generation: u64 },
    Unchanged,
}

impl PolicyStore {
    /// Loads the first snapshot; failing here fails start-up. Without an SDL file in the
    /// policies folder, the schema map is introspected from `schema_upstream`.
    pub fn load(
        config_path: &Path,
        metrics: Arc<Metrics>,
        schema_upstream: Option<&Upstream>,
    ) -> Result<Arc<PolicyStore>, ConfigErrors> {
        Self::load_with(config_path, metrics, schema_upstream, None)
    }

    /// [`Self::load`] with the policy texts of a shared set instead of the folder's files.
    pub fn load_with(
        config_path: &Path,
        metrics: Arc<Metrics>,
        schema_upstream: Option<&Upstream>,
        shared: Option<PolicyTexts>,
    ) -> Result<Arc<PolicyStore>, ConfigErrors> {
        let mut inputs = Inputs::read(config_path)?;
        if let Some(t) = &shared {
            inputs.overlay(t);
        }
        let introspected = super::compile::introspect_if_needed(&inputs, schema_upstream)?;
        let snap = compile(&inputs, 1, None, introspected.clone())?;
        let started_with = snap.restart_digest;
        let store = PolicyStore {
            current: ArcSwap::from_pointee(snap),
            config_path: config_path.to_path_buf(),
            metrics,
            reload_lock: Mutex::new(()),
            introspected,
            last_rejected: Mutex::new(None),
            started_with,
            shared: Mutex::new(shared.map(Arc::new)),
        };
        store.publish_gauges(&store.current.load());
        store.metrics.reloads.with_label_values(&["applied"]).inc();
        Ok(Arc::new(store))
    }

    /// The snapshot a request uses from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads every input; compiles and swaps when anything changed. A failure keeps the
    /// current snapshot, is logged with file, line and reason, and counted as rejected.
    pub fn reload(&self, trigger: &'static str) -> Result<ReloadOutcome, ConfigErrors> {
        // Held to the end: a file reload racing a new shared set must not compile the old one.
        let shared = self.shared.lock();
        self.reload_from(trigger, shared.as_deref())
    }

    /// Applies a new shared policy set (the cluster's): compiled with gateway.toml exactly as a
    /// file reload; refused whole when it does not compile. Revocations only ever grow: a jti
    /// the live snapshot holds as revoked that the set drops without listing it as un-revoked on
    /// purpose (a restored backup, a writer working from a stale copy) stays revoked here — the
    /// set is applied with it kept, and the kept jtis are returned (the cluster raises an alarm).
    /// `Err` also when this very set was refused before.
    pub fn apply_shared(
        &self,
        mut texts: PolicyTexts,
        trigger: &'static str,
    ) -> Result<(ReloadOutcome, Vec<String>), ConfigErrors> {
        let mut shared = self.shared.lock();
        let current = self.current.load_full();
        let listed = super::compile::revoked_jtis(texts.revoked.as_deref().unwrap_or(""));
        let mut kept: Vec<String> = current
            .registry
            .revoked
            .iter()
            .filter(|j| !listed.contains(&***j) && !texts.unrevoked.contains(&***j))
            .map(|j| j.to_string())
            .collect();
        kept.sort_unstable();
        if !kept.is_empty() {
            let mut revoked = texts.revoked.take().unwrap_or_default();
            if !revoked.is_empty() && !revoked.ends_with('\n') {
                revoked.push('\n');
            }
            revoked.push_str(
                "# kept by this replica: dropped by the set without being un-revoked on purpose\n",
            );
            for j in &kept {
                revoked.push_str(j);
                revoked.push('\n');
            }
            texts.revoked = Some(revoked);
        }
        let outcome = self.reload_from(trigger, Some(&texts))?;
        *shared = Some(Arc::new(texts));
        Ok((outcome, kept))
    }

    /// Compiles `texts` as the next snapshot would be compiled (the live one as the previous),
    /// without applying it: the management API's check before it writes anything.
    pub fn check(&self, texts: &PolicyTexts) -> Result<Snapshot, ConfigErrors> {
        let current = self.current.load_full();
        let inputs = self.read_inputs(Some(texts))?;
        compile(
            &inputs,
            current.generation + 1,
            Some(&current),
            self.introspected.clone(),
        )
    }

    /// Whether the live policy comes from a shared set (the cluster's) rather than the folder.
    pub fn is_shared(&self) -> bool {
        self.shared.lock().is_some()
    }

    fn read_inputs(&self, shared: Option<&PolicyTexts>) -> Result<Inputs, ConfigErrors> {
        let mut inputs = Inputs::read(&self.config_path)?;
        if let Some(t) = shared {
            inputs.overlay(t);
        }
        Ok(inputs)
    }

    fn reload_from(
        &self,
        trigger: &'static str,
        shared: Option<&PolicyTexts>,
    ) -> Result<ReloadOutcome, ConfigErrors> {
        let _guard = self.reload_lock.lock();
        let current = self.current.load_full();
        let mut rejected_digest = None;
        let result = self.read_inputs(shared).and_then(|inputs| {
            let digest = inputs.digest();
            if digest == current.inputs_digest {
                // The files are back to what is live (e.g. a broken edit was reverted).
                self.metrics.last_reload_success.set(1);
                *self.last_rejected.lock() = None;
                return Ok(None);
            }
            // A shared set is remembered with its un-revoked list (not part of the files' digest):
            // the same texts with a jti un-revoked on purpose are a different set.
            let memo = match shared {
                Some(t) => {
                    use sha2::Digest;
                    let mut h = sha2::Sha256::new();
                    h.update(digest);
                    for j in &t.unrevoked {
                        h.update(j.as_bytes());
                        h.update([0]);
                    }
                    h.finalize().into()
                }
                None => digest,
            };
            if let Some((d, errors)) = &*self.last_rejected.lock() {
                if *d == memo {
                    // A file reload of the same broken files is quiet; a shared set is told.
                    return match shared {
                        Some(_) => Err(errors.clone()),
                        None => Ok(None),
                    };
                }
            }
            rejected_digest = Some(memo);
            let snap = compile(
                &inputs,
                current.generation + 1,
                Some(&current),
                self.introspected.clone(),
            )?;
            Ok(Some((snap, inputs.revoked_mtime)))
        });
        match result {
            Ok(None) => Ok(ReloadOutcome::Unchanged),
            Ok(Some((snap, revoked_mtime))) => {
                let generation = snap.generation;
                if snap.revoked_digest != current.revoked_digest {
                    if let Some(lag) =
                        revoked_mtime.and_then(|m| SystemTime::now().duration_since(m).ok())
                    {
                        self.metrics.revocation_lag.observe(lag.as_secs_f64());
                    }
                }
                let snap = Arc::new(snap);
                // Swap first: the generation gauge and the audit line announce a snapshot that
                // every request from then on is already checked against (the soak found
                // requests accepted for a revoked jti just after the gauge had moved).
                self.current.store(snap.clone());
                self.publish_gauges(&snap);
                tracing::info!(
                    target: "audit",
                    event = "reload_applied",
                    trigger,
                    generation,
                    tokens = snap.registry.tokens.len(),
                    revoked = snap.registry.revoked.len(),
                    "policy snapshot applied"
                );
                // Only [auth], [cms] (and the policies folder) apply live: say so when anything
                // else in gateway.toml changed, instead of implying it took effect.
                let restart = snap.restart_digest != self.started_with;
                self.metrics.config_restart_required.set(i64::from(restart));
                if restart && snap.restart_digest != current.restart_digest {
                    tracing::warn!(
                        target: "audit",
                        event = "restart_required",
                        trigger,
                        generation,
                        live = ?crate::policy::compile::LIVE_SECTIONS,
                        "gateway.toml changed outside the sections a reload applies; restart to apply it"
                    );
                }
                drop(snap);
                retire(current);
                self.metrics.reloads.with_label_values(&["applied"]).inc();
                Ok(ReloadOutcome::Applied { generation })
            }
            Err(errors) => {
                if let Some(d) = rejected_digest {
                    *self.last_rejected.lock() = Some((d, errors.clone()));
                }
                self.metrics.last_reload_success.set(0);
                self.metrics.reloads.with_label_values(&["rejected"]).inc();
                for e in &errors.0 {
                    tracing::error!(
                        target: "audit",
                        event = "reload_rejected",
                        trigger,
                        file = %e.file.display(),
                        line = e.line,
                        field = %e.field,
                        reason = %e.message,
                        "policy reload rejected; the previous snapshot keeps serving"
                    );
                }
                Err(errors)
            }
        }
    }

    fn publish_gauges(&self, snap: &Snapshot) {
        self.metrics.last_reload_success.set(1);
        *self.last_rejected.lock() = None;
        self.metrics.generation.set(snap.generation as i64);
        self.metrics
            .registry_tokens
            .set(snap.registry.tokens.len() as i64);
        self.metrics
            .registry_revoked
            .set(snap.registry.revoked.len() as i64);
        let t = snap
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.last_reload.set(t);
    }

    pub fn policies_dir(&self) -> PathBuf {
        Inputs::read(&self.config_path)
            .map(|i| i.dir)
            .unwrap_or_default()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

/// Frees a replaced snapshot off the request path. Freeing a million-entry registry takes close
/// to a second (measured in benches/auth.rs); if the last request holding the old snapshot
/// dropped it, that request's worker thread would stall. A reaper thread waits until it holds
/// the only reference (requests finish within their timeouts) and frees it there.
fn retire(old: Arc<Snapshot>) {
    let spawned = std::thread::Builder::new()
        .name("snapshot-reaper".into())
        .spawn(move || {
            while Arc::strong_count(&old) > 1 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(old);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the snapshot reaper; the old snapshot is freed by its last user");
    }
}
