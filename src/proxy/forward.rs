//! What goes upstream for an admitted request, for pass-through and cache fills alike: the
//! target (GET: the checked parameters re-encoded) and the context headers that were checked.

use http::Method;

use crate::config::Upstream;
use crate::pipeline::Admitted;
use crate::stage::Cms;

/// The upstream target: the endpoint's path, plus for a GET the checked GraphQL parameters as
/// the gateway re-encoded them.
pub fn path(upstream: &Upstream, a: &Admitted, method: &Method) -> String {
    if *method == Method::GET {
        let qs = std::str::from_utf8(&a.parsed.forward).unwrap_or_default();
        let sep = if upstream.path.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{qs}", upstream.path)
    } else {
        upstream.path.clone()
    }
}

/// `gcms-stage` and `gcms-locales` exactly as they were checked: the stage every root field
/// without a `stage:` argument reads (the client's header or the principal's default), and the
/// locales fallback list (the client's header, canonical, else the CMS's default locale). Sent
/// on every upstream request, so the CMS never applies a default of its own.
pub fn context_headers(a: &Admitted, cms: &Cms) -> [(&'static str, String); 2] {
    let locales = match &a.header_locales {
        Some(l) if !l.is_empty() => l.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(","),
        _ => cms.default_locale.as_str().to_string(),
    };
    [
        ("gcms-stage", a.stage.fallback.as_str().to_string()),
        ("gcms-locales", locales),
    ]
}
