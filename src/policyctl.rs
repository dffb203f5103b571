//! Writers of the policy: `policy push` (a folder into the cluster's Redis set, GitOps-style),
//! `policy status`, and `token revoke` (into the Redis set, or into the folder's revoked.txt for
//! a gateway on its own). Every push is compiled here first exactly as a replica will compile
//! it, so an invalid set is refused before anything is written.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::set::{self, NewSet, StoredSet};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::compile::{compile_texts, revoked_jtis, Inputs, REVOKED_FILE};
use crate::policy::{PolicyTexts, Snapshot};

/// How long a writer waits for Redis.
const WRITER_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(config_path: &Path) -> Result<Arc<Cluster>, String> {
    let settings = Config::cluster_settings(config_path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{}: no [cluster] section: there is no shared policy set to write",
                config_path.display()
            )
        })?;
    Cluster::new(settings, Arc::new(Metrics::new()))
}

fn current(cluster: &Arc<Cluster>) -> Result<Option<StoredSet>, String> {
    let c = cluster.clone();
    cluster
        .block_on(async move {
            let mut conn = c.connection();
            tokio::time::timeout(WRITER_TIMEOUT, set::read(&mut conn, &c.keys)).await
        })
        .ok_or("cluster runtime stopped")?
        .map_err(|_| "Redis did not answer in time".to_string())?
        .map_err(|e| format!("reading the policy set: {e}"))
}

/// `contentgate policy push DIR`: returns the report to print.
pub fn push(
    config_path: &Path,
    dir: &Path,
    dry_run: bool,
    allow_unrevoke: bool,
    writer: &str,
) -> Result<String, String> {
    let cluster = connect(config_path)?;
    let origin = set::origin(&cluster.keys);
    let mut texts = PolicyTexts::read_folder(dir, &format!("{}", dir.display()))?;
    let current = current(&cluster)?;
    // The stored set compiled, for the same safety rules a replica applies (an emptied
    // registry or revocation file is refused unless written so on purpose).
    let previous = current
        .as_ref()
        .and_then(|c| compile_texts(config_path, &c.texts, None).ok());
    let next = compile_texts(config_path, &texts, previous.as_ref())
        .map_err(|e| format!("the folder does not compile; nothing was written:\n{e}"))?;
    let old_revoked: BTreeSet<String> = current
        .as_ref()
        .map(|c| revoked_jtis(c.texts.revoked.as_deref().unwrap_or("")))
        .unwrap_or_default();
    let new_revoked = revoked_jtis(texts.revoked.as_deref().unwrap_or(""));
    let unrevoking: Vec<&String> = old_revoked.difference(&new_revoked).collect();
    if !unrevoking.is_empty() && !allow_unrevoke {
        return Err(format!(
            "the folder un-revokes {} jti(s) revoked in Redis ({}); nothing was written. Add them to revoked.txt (a `token revoke` since the folder was last pulled?) or pass --allow-unrevoke to mean it",
            unrevoking.len(),
            unrevoking.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let mut unrevoked: BTreeSet<String> = current
        .as_ref()
        .map(|c| c.texts.unrevoked.clone())
        .unwrap_or_default();
    unrevoked.extend(unrevoking.iter().map(|s| s.to_string()));
    unrevoked.retain(|j| !new_revoked.contains(j));
    texts.unrevoked = unrevoked;

    let mut report = String::new();
    let _ = writeln!(
        report,
        "policy set {origin}: {}",
        match &current {
            Some(c) => format!("version {} (epoch {})", c.texts.version, c.epoch),
            None => "empty (no set written yet)".into(),
        }
    );
    diff(
        &mut report,
        current.as_ref().map(|c| &c.texts),
        previous.as_ref(),
        &texts,
        &next,
    );
    if dry_run {
        let _ = writeln!(report, "dry run: nothing written");
        return Ok(report);
    }
    let expected = current.as_ref().map(|c| c.texts.version).or(Some(0));
    let c = cluster.clone();
    let writer = writer.to_string();
    let version = cluster
        .block_on(async move {
            let new = NewSet {
                public: texts.public.as_deref().unwrap_or(""),
                tokens: texts
                    .tokens
                    .as_ref()
                    .map(|(n, t)| (n.as_str(), t.as_str())),
                revoked: texts.revoked.as_deref().unwrap_or(""),
                schema: texts.schema.as_deref(),
                unrevoked: &texts.unrevoked,
            };
            let mut conn = c.connection();
            tokio::time::timeout(
                WRITER_TIMEOUT,
                set::write(&mut conn, &c.keys, &new, expected, &writer),
            )
            .await
        })
        .ok_or("cluster runtime stopped")?
        .map_err(|_| "Redis did not answer in time; the write may or may not have happened (run `policy status`)".to_string())?
        .map_err(|e| format!("writing the policy set: {e}"))?;
    let _ = writeln!(report, "written: version {version}");
    Ok(report)
}

fn diff(
    out: &mut String,
    old: Option<&PolicyTexts>,
    old_snap: Option<&Snapshot>,
    new: &PolicyTexts,
    new_snap: &Snapshot,
) {
    let same = |a: Option<&String>, b: Option<&String>| a == b;
    let _ = writeln!(
        out,
        "  public.toml: {}",
        if same(old.and_then(|o| o.public.as_ref()), new.public.as_ref()) {
            "unchanged"
        } else {
            "changed"
        }
    );
    let old_tokens = old_snap.map(|s| &s.registry.tokens);
    let new_tokens = &new_snap.registry.tokens;
    let mut added: Vec<&str> = new_tokens
        .keys()
        .filter(|j| old_tokens.is_none_or(|o| !o.contains_key(*j)))
        .map(|j| &**j)
        .collect();
    let mut removed: Vec<&str> = old_tokens
        .map(|o| {
            o.keys()
                .filter(|j| !new_tokens.contains_key(*j))
                .map(|j| &**j)
                .collect()
        })
        .unwrap_or_default();
    let mut changed: Vec<&str> = new_tokens
        .iter()
        .filter(|(j, e)| {
            old_tokens
                .and_then(|o| o.get(*j))
                .is_some_and(|o| format!("{o:?}") != format!("{e:?}"))
        })
        .map(|(j, _)| &**j)
        .collect();
    for v in [&mut added, &mut removed, &mut changed] {
        v.sort_unstable();
    }
    let list = |v: &[&str]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" ({})", v.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "  tokens: {} now; +{} added{}, -{} removed{}, ~{} changed{}",
        new_tokens.len(),
        added.len(),
        list(&added),
        removed.len(),
        list(&removed),
        changed.len(),
        list(&changed)
    );
    if !removed.is_empty() {
        let _ = writeln!(
            out,
            "  note: a removed token is refused (unknown jti) until an entry with its jti comes back, by a later push or a restored backup; revoke it (revoked.txt) to refuse its strings for good"
        );
    }
    let old_rev = old
        .map(|o| revoked_jtis(o.revoked.as_deref().unwrap_or("")))
        .unwrap_or_default();
    let new_rev = revoked_jtis(new.revoked.as_deref().unwrap_or(""));
    let plus: Vec<&str> = new_rev.difference(&old_rev).map(String::as_str).collect();
    let minus: Vec<&str> = old_rev.difference(&new_rev).map(String::as_str).collect();
    let _ = writeln!(
        out,
        "  revoked: {} now; +{} revoked{}, -{} un-revoked{}",
        new_rev.len(),
        plus.len(),
        list(&plus),
        minus.len(),
        list(&minus)
    );
    let _ = writeln!(
        out,
        "  schema.graphql: {}",
        match (old.and_then(|o| o.schema.as_ref()), new.schema.as_ref()) {
            (None, None) => "none (the replicas' own SDL or introspection)",
            (a, b) if a == b => "unchanged",
            (_, None) => "removed",
            _ => "changed",
        }
    );
}

/// `contentgate policy status`.
pub fn status(config_path: &Path) -> Result<String, String> {
    let cluster = connect(config_path)?;
    match current(&cluster)? {
        None => Ok(format!(
            "policy set {}: empty (no set written; replicas keep their last good snapshot and refuse tokens after max_staleness)\n",
            set::origin(&cluster.keys)
        )),
        Some(s) => {
            let snap = compile_texts(config_path, &s.texts, None);
            Ok(format!(
                "policy set {}: version {} (epoch {}), written {}\n{}\n",
                set::origin(&cluster.keys),
                s.texts.version,
                s.epoch,
                s.texts
                    .written_at
                    .map(|t| humantime::format_rfc3339_millis(t).to_string())
                    .unwrap_or_else(|| "?".into()),
                match snap {
                    Ok(snap) => format!("compiles: {}", snap.summary()),
                    Err(e) => format!("DOES NOT COMPILE (replicas refuse it):\n{e}"),
                }
            ))
        }
    }
}

/// A jti as the registry and revoked.txt can hold it.
fn check_jti(jti: &str) -> Result<(), String> {
    if jti.is_empty()
        || jti.len() > 256
        || jti.contains('#')
        || jti.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{jti:?} is not a jti (1-256 characters, no spaces, no '#')"
        ));
    }
    Ok(())
}

/// `contentgate token revoke JTI…`: into the Redis set with `[cluster]`, else into the policies
/// folder's revoked.txt (written whole to a temporary file, then renamed over it).
pub fn revoke(config_path: &Path, jtis: &[String], writer: &str) -> Result<String, String> {
    for j in jtis {
        check_jti(j)?;
    }
    if Config::cluster_settings(config_path)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        let cluster = connect(config_path)?;
        let c = cluster.clone();
        let jtis = jtis.to_vec();
        let writer = writer.to_string();
        let (version, added) = cluster
            .block_on(async move {
                let mut conn = c.connection();
                tokio::time::timeout(WRITER_TIMEOUT, set::revoke(&mut conn, &c.keys, &jtis, &writer))
                    .await
            })
            .ok_or("cluster runtime stopped")?
            .map_err(|_| "Redis did not answer in time; the revocation may or may not have been written (run `policy status`)".to_string())?
            .map_err(|e| format!("revoking: {e}"))?;
        return Ok(format!(
            "revoked {added} new jti(s) in {}: version {version}; every replica refuses them within a second\n",
            set::origin(&cluster.keys)
        ));
    }
    let inputs = Inputs::read(config_path).map_err(|e| e.to_string())?;
    let path = inputs.dir.join(REVOKED_FILE);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let have = revoked_jtis(&text);
    let mut added = 0;
    for j in jtis {
        if !have.contains(j) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(j);
            text.push('\n');
            added += 1;
        }
    }
    if added > 0 {
        let tmp = path.with_extension("txt.tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(format!(
        "revoked {added} new jti(s) in {}; the gateway applies it at its next reload (watch or poll)\n",
        path.display()
    ))
}
