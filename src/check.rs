//! `contentgate check`: compile everything the gateway would load and summarize it.

use std::fmt::Write;
use std::path::Path;

use crate::config::Config;
use crate::policy::compile::{compile, Inputs};

/// The summary on success; every error (file, line, field) on failure.
pub fn run(config_path: &Path) -> Result<String, String> {
    let mut errors = Vec::new();
    let config = Config::load(config_path)
        .map_err(|e| errors.extend(e.0))
        .ok();
    let snap = Inputs::read(config_path)
        .and_then(|mut i| {
            // A cluster's policies live in Redis (`policy status` checks those); without a
            // folder set, gateway.toml is checked against a set that grants nothing.
            if i.file.cluster.is_some() && i.public.is_none() {
                if let Ok(cms) = crate::config::cms_from_file(&i.file.cms) {
                    i.overlay(&crate::policy::PolicyTexts::bootstrap(&cms));
                }
            }
            // Without an SDL file the schema map comes from the upstream, as at start-up.
            let introspected = crate::policy::compile::introspect_if_needed(
                &i,
                config.as_ref().and_then(|c| c.schema_upstream()),
            )?;
            compile(&i, 1, None, introspected)
        })
        .map_err(|e| errors.extend(e.0))
        .ok();
    let (Some(config), Some(snap)) = (config, snap) else {
        errors.dedup();
        return Err(errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"));
    };
    let mut out = String::new();
    let _ = writeln!(out, "config: {}", config_path.display());
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .map(|l| {
            format!(
                "{}{}",
                l.address,
                if l.tls.is_some() { " (TLS, h2)" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(out, "listeners: {}", listeners.join(", "));
    let _ = writeln!(
        out,
        "admin: {}",
        config.admin.as_deref().unwrap_or("(none)")
    );
    for e in &config.endpoints {
        let _ = writeln!(
            out,
            "endpoint {} ({}) -> upstream {} ({:?} credential)",
            e.path,
            e.kind.as_str(),
            e.upstream.name,
            e.upstream.credential
        );
    }
    let mut kids: Vec<_> = snap
        .verifier
        .keys()
        .kids()
        .map(|(k, a)| format!("{k} ({a:?})"))
        .collect();
    kids.sort();
    let _ = writeln!(
        out,
        "keys: {}",
        if kids.is_empty() {
            "(none)".into()
        } else {
            kids.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "tokens: {} active, {} revoked jtis",
        snap.registry.tokens.len(),
        snap.registry.revoked.len()
    );
    let _ = writeln!(
        out,
        "public: default stage {}, {} grants{}",
        snap.registry.public.default_stage,
        snap.registry.public.permissions.grants().len(),
        if snap.registry.public.permissions.is_empty() {
            " (unauthenticated requests get 401)"
        } else {
            ""
        }
    );
    if let Some(c) = &config.cluster {
        let _ = writeln!(
            out,
            "cluster: {} prefix {:?}, max_staleness {:?} ({:?}); the policy set lives in Redis: `contentgate policy status` checks it",
            crate::config::redact_url(&c.url),
            c.prefix,
            c.max_staleness,
            c.on_stale
        );
    }
    let _ = writeln!(
        out,
        "stages: {:?}, locales: {:?}",
        snap.cms.stages, snap.cms.locales
    );
    let _ = write!(out, "OK");
    Ok(out)
}
