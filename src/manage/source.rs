//! Where the policy lives, read and written whole: the policies folder (each changed file
//! written to a temporary file, synced, renamed over the old one, under an advisory lock
//! shared by every writer on the machine) or the cluster's Redis set (one versioned write
//! whose compare-and-set refuses a set changed since it was read).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::ManageError;
use crate::cluster::set::{self, NewSet};
use crate::cluster::Cluster;
use crate::policy::compile::{PUBLIC_FILE, REVOKED_FILE};
use crate::policy::PolicyTexts;

/// How long a change waits for Redis.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// The advisory lock file in the policies folder.
const LOCK_FILE: &str = ".contentgate.lock";

pub enum Source {
    Folder {
        dir: PathBuf,
        /// Why the folder cannot be written (a read-only mount such as a ConfigMap).
        read_only: Option<String>,
    },
    Redis(Arc<Cluster>),
    /// Either of the above, refusing every change.
    ReadOnly(Box<Source>, String),
}

/// One version of the policy as read.
pub struct Current {
    pub texts: PolicyTexts,
    /// The entity tag of this version (a digest of the texts).
    pub etag: String,
}

/// The entity tag of a set of texts: every editor that read the same files sees the same tag.
pub fn etag(t: &PolicyTexts) -> String {
    let mut h = Sha256::new();
    for part in [
        t.public.as_deref(),
        t.tokens.as_ref().map(|(n, _)| n.as_str()),
        t.tokens.as_ref().map(|(_, x)| x.as_str()),
        t.revoked.as_deref(),
    ] {
        match part {
            Some(p) => {
                h.update([1]);
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => h.update([0]),
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// Whether a folder can be written: a lock file is created (or opened) in it.
pub fn probe_folder(dir: &Path) -> Option<String> {
    match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
    {
        Ok(_) => None,
        Err(e) => Some(format!(
            "the policies folder {} cannot be written ({e}); a read-only mount such as a ConfigMap is changed where it comes from (Git, kubectl), or use [cluster] for a writable policy set",
            dir.display()
        )),
    }
}

/// Held while a change reads, checks and writes the folder.
pub struct FolderLock(#[allow(dead_code)] Option<File>);

impl Source {
    pub fn read_only(self, why: &str) -> Source {
        Source::ReadOnly(Box::new(self), why.to_string())
    }

    pub fn read_only_reason(&self) -> Option<&str> {
        match self {
            Source::Folder { read_only, .. } => read_only.as_deref(),
            Source::Redis(_) => None,
            Source::ReadOnly(_, why) => Some(why),
        }
    }

    /// Whether changes go to the cluster's set (applied locally as a shared set).
    pub fn is_redis(&self) -> bool {
        match self {
            Source::Redis(_) => true,
            Source::ReadOnly(inner, _) => inner.is_redis(),
            Source::Folder { .. } => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Folder { dir, .. } => format!("folder {}", dir.display()),
            Source::Redis(c) => set::origin(&c.keys),
            Source::ReadOnly(inner, _) => format!("{} (read-only)", inner.describe()),
        }
    }

    /// Takes the writers' lock (a no-op for Redis, whose write is a compare-and-set).
    pub fn lock(&self) -> Result<FolderLock, ManageError> {
        match self {
            Source::Folder { dir, read_only } => {
                if let Some(why) = read_only {
                    return Err(ManageError::read_only(why.clone()));
                }
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(LOCK_FILE))
                    .map_err(|e| ManageError::read_only(format!("{}: {e}", dir.display())))?;
                f.lock().map_err(|e| {
                    ManageError::unavailable(format!("cannot lock {}: {e}", dir.display()))
                })?;
                Ok(FolderLock(Some(f)))
            }
            Source::Redis(_) => Ok(FolderLock(None)),
            Source::ReadOnly(_, why) => Err(ManageError::read_only(why.clone())),
        }
    }

    pub fn read(&self) -> Result<Current, ManageError> {
        let texts = match self {
            Source::Folder { dir, .. } => PolicyTexts::read_folder(dir, &dir.display().to_string())
                .map_err(ManageError::unavailable)?,
            Source::Redis(cluster) => {
                let c = cluster.clone();
                let stored = cluster
                    .block_on(async move {
                        let mut conn = c.connection();
                        tokio::time::timeout(REDIS_TIMEOUT, set::read(&mut conn, &c.keys)).await
                    })
                    .ok_or_else(|| ManageError::unavailable("cluster runtime stopped"))?
                    .map_err(|_| ManageError::unavailable("Redis did not answer in time"))?
                    .map_err(|e| {
                        ManageError::unavailable(format!("reading the policy set: {e}"))
                    })?;
                stored
                    .ok_or_else(|| {
                        ManageError::unavailable(
                            "there is no policy set in Redis yet: push one first (contentgate policy push)",
                        )
                    })?
                    .texts
            }
            Source::ReadOnly(inner, _) => return inner.read(),
        };
        Ok(Current {
            etag: etag(&texts),
            texts,
        })
    }

    /// Writes `next` over `current` (which the caller read under [`Self::lock`]). Returns the
    /// texts as stored (with the new version for Redis).
    pub fn write(
        &self,
        current: &Current,
        mut next: PolicyTexts,
        writer: &str,
    ) -> Result<PolicyTexts, ManageError> {
        match self {
            Source::Folder { dir, .. } => {
                // Revocations first: a crash between two renames leaves the jti revoked and the
                // entry still listed, never the other way round.
                let files = [
                    (REVOKED_FILE, &current.texts.revoked, &next.revoked),
                    (
                        next.tokens
                            .as_ref()
                            .map(|(n, _)| n.as_str())
                            .unwrap_or("tokens.toml"),
                        &current.texts.tokens.as_ref().map(|(_, t)| t.clone()),
                        &next.tokens.as_ref().map(|(_, t)| t.clone()),
                    ),
                    (PUBLIC_FILE, &current.texts.public, &next.public),
                ];
                for (name, old, new) in files {
                    if old == new {
                        continue;
                    }
                    if let Some(text) = new {
                        replace_file(&dir.join(name), text.as_bytes())?;
                    }
                }
                Ok(next)
            }
            Source::Redis(cluster) => {
                let expected = current.texts.version;
                let t = next.clone();
                let c = cluster.clone();
                let writer = writer.to_string();
                let version = cluster
                    .block_on(async move {
                        let new = NewSet {
                            public: t.public.as_deref().unwrap_or(""),
                            tokens: t.tokens.as_ref().map(|(n, x)| (n.as_str(), x.as_str())),
                            revoked: t.revoked.as_deref().unwrap_or(""),
                            schema: t.schema.as_deref(),
                            unrevoked: &t.unrevoked,
                        };
                        let mut conn = c.connection();
                        tokio::time::timeout(
                            REDIS_TIMEOUT,
                            set::write(&mut conn, &c.keys, &new, Some(expected), &writer),
                        )
                        .await
                    })
                    .ok_or_else(|| ManageError::unavailable("cluster runtime stopped"))?
                    .map_err(|_| {
                        ManageError::unavailable(
                            "Redis did not answer in time; the change may or may not have been written: reload and look",
                        )
                    })?
                    .map_err(|e| {
                        if e.to_string().contains("CONFLICT") {
                            ManageError::precondition_failed()
                        } else {
                            ManageError::unavailable(format!("writing the policy set: {e}"))
                        }
                    })?;
                next.version = version;
                Ok(next)
            }
            Source::ReadOnly(_, why) => Err(ManageError::read_only(why.clone())),
        }
    }
}

/// Writes `bytes` beside `path`, syncs it and renames it over `path` (readers see the old file
/// or the new one, never a part), then syncs the folder.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), ManageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let fail =
        |e: std::io::Error| ManageError::unavailable(format!("writing {}: {e}", path.display()));
    let result = (|| {
        let mut f = OpenOptions::new().create_new(true).write(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}
