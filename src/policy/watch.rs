//! Keeping the snapshot current: a directory watch, a poll timer and SIGHUP.
//!
//! Kubernetes updates a mounted ConfigMap by swapping the `..data` symlink, which kills a watch
//! on the file itself; so the *directories* are watched, and a timer re-reads and compares the
//! contents as a backstop (an unchanged digest costs a few file reads and no compile). A reload
//! compiles on the blocking pool so a million-entry registry never stalls a request thread.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use super::store::PolicyStore;

pub struct PolicyWatcher {
    pub store: Arc<PolicyStore>,
    pub poll_interval: Duration,
}

impl PolicyWatcher {
    async fn reload(&self, trigger: &'static str) {
        let store = self.store.clone();
        // Errors are logged and counted inside reload(); the old snapshot keeps serving.
        let _ = tokio::task::spawn_blocking(move || store.reload(trigger)).await;
    }
}

#[async_trait]
impl BackgroundService for PolicyWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let policies = self.store.policies_dir();
        let config_name = self.store.config_path().file_name().map(|n| n.to_owned());
        // Anything in the policies folder; in the config file's folder only the config file
        // and Kubernetes' `..data` swaps. A log file or an editor's swap file next to
        // gateway.toml would otherwise trigger a re-read on every write (the soak measured a
        // busy log there costing a fifth of a core).
        let relevant = move |p: &std::path::Path| {
            p.starts_with(&policies)
                || p.file_name().is_some_and(|n| {
                    Some(n) == config_name.as_deref() || n.to_string_lossy().starts_with("..")
                })
        };
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Only changes: the reload's own reads raise access events, which would otherwise
            // trigger the next reload in an endless loop.
            if ev.is_ok_and(|e| {
                matches!(
                    e.kind,
                    notify::EventKind::Create(_)
                        | notify::EventKind::Modify(_)
                        | notify::EventKind::Remove(_)
                ) && e.paths.iter().any(|p| relevant(p))
            }) {
                let _ = tx.send(());
            }
        });
        let _watcher = match watcher {
            Ok(mut w) => {
                let mut dirs = vec![self.store.policies_dir()];
                if let Some(parent) = self.store.config_path().parent() {
                    dirs.push(parent.to_path_buf());
                }
                for d in dirs {
                    if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; relying on polling");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable; relying on polling");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = rx.recv() => {
                    // Editors and ConfigMap swaps write in several steps: let them settle.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while rx.try_recv().is_ok() {}
                    self.reload("watch").await;
                }
                _ = poll.tick() => self.reload("poll").await,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload("sighup").await;
                }
            }
        }
    }
}
