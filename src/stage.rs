//! Stages and locales, and the rule that picks the stage a request reads from.
//!
//! Effective stage = the `stage:` argument of a root field > the `gcms-stage` header > the
//! principal's default stage. When a root field names no stage and the client sent no header,
//! the gateway injects `gcms-stage: <default>` upstream: otherwise the CMS would apply *its own*
//! default, which is not necessarily the one the principal was granted and checked against.

use std::fmt;
use std::sync::Arc;

/// A content stage name (`DRAFT`, `PUBLISHED`, or a custom stage), validated against `[cms]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stage(Arc<str>);

impl Stage {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A locale name (`en`, `de`, ...), validated against `[cms]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locale(Arc<str>);

impl Locale {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The project's stages and locales (`[cms]`), and its default locale: what the CMS serves
/// when a request names no locale.
#[derive(Debug, Clone)]
pub struct Cms {
    pub stages: Vec<Stage>,
    pub locales: Vec<Locale>,
    pub default_locale: Locale,
}

impl Cms {
    pub fn new(
        stages: Vec<String>,
        locales: Vec<String>,
        default_locale: Option<String>,
    ) -> Result<Self, String> {
        if stages.is_empty() {
            return Err("at least one stage is required".into());
        }
        let default = match default_locale.or_else(|| locales.first().cloned()) {
            Some(d) => d,
            None => return Err("at least one locale is required".into()),
        };
        if !locales.contains(&default) {
            return Err(format!(
                "default_locale {default:?} is not one of locales {locales:?}"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for n in stages.iter().chain(&locales) {
            if !is_name(n) {
                return Err(format!(
                    "{n:?} is not a valid stage or locale name (letters, digits, `_`)"
                ));
            }
            if !seen.insert(n.clone()) {
                return Err(format!("{n:?} is listed twice"));
            }
        }
        Ok(Self {
            stages: stages.into_iter().map(Stage::new).collect(),
            locales: locales.into_iter().map(Locale::new).collect(),
            default_locale: Locale::new(default),
        })
    }

    /// A stand-in after a `[cms]` error, so the rest of the file is still checked.
    pub fn fallback() -> Self {
        Self {
            stages: vec![Stage::new("DRAFT"), Stage::new("PUBLISHED")],
            locales: vec![Locale::new("en")],
            default_locale: Locale::new("en"),
        }
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.as_str() == name)
    }

    pub fn locale(&self, name: &str) -> Option<&Locale> {
        self.locales.iter().find(|l| l.as_str() == name)
    }
}

/// A GraphQL enum value name: what a stage or locale can be called (`[_A-Za-z][_0-9A-Za-z]*`).
pub fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

/// Where the stage of a root field came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageSource {
    Argument,
    Header,
    Default,
}

impl StageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Argument => "argument",
            Self::Header => "header",
            Self::Default => "default",
        }
    }
}

/// The stage decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveStage {
    /// The stage every root field without a `stage:` argument reads: the client's header or the
    /// principal's default. This is what the upstream sees as `gcms-stage`.
    pub fallback: Stage,
    pub fallback_source: StageSource,
    /// Stage per root field, in document order (argument, else `fallback`).
    pub per_field: Vec<Stage>,
    /// Whether the gateway must add `gcms-stage: fallback` to the upstream request.
    pub inject: bool,
}

impl EffectiveStage {
    /// `arguments`: the `stage:` argument of each root field, if it has one.
    pub fn decide(arguments: &[Option<Stage>], header: Option<Stage>, default: &Stage) -> Self {
        let (fallback, fallback_source) = match header {
            Some(h) => (h, StageSource::Header),
            None => (default.clone(), StageSource::Default),
        };
        let unnamed = arguments.iter().any(Option::is_none) || arguments.is_empty();
        let per_field = arguments
            .iter()
            .map(|a| a.clone().unwrap_or_else(|| fallback.clone()))
            .collect();
        Self {
            inject: fallback_source == StageSource::Default && unnamed,
            fallback,
            fallback_source,
            per_field,
        }
    }

    /// The stage to report (logs): the single stage read, or the fallback when fields differ.
    pub fn primary(&self) -> &Stage {
        match self.per_field.first() {
            Some(first) if self.per_field.iter().all(|s| s == first) => first,
            _ => &self.fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> Stage {
        Stage::new(n)
    }

    #[test]
    fn argument_beats_header_beats_default() {
        let d = s("PUBLISHED");
        let e = EffectiveStage::decide(&[Some(s("DRAFT"))], Some(s("QA")), &d);
        assert_eq!(e.per_field, vec![s("DRAFT")]);
        assert!(!e.inject);
        let e = EffectiveStage::decide(&[None], Some(s("QA")), &d);
        assert_eq!(e.per_field, vec![s("QA")]);
        assert_eq!(e.fallback_source, StageSource::Header);
        assert!(!e.inject);
        let e = EffectiveStage::decide(&[None], None, &d);
        assert_eq!(e.per_field, vec![s("PUBLISHED")]);
        assert!(e.inject);
    }

    #[test]
    fn a_field_without_argument_still_gets_the_default_injected() {
        let e = EffectiveStage::decide(&[Some(s("DRAFT")), None], None, &s("PUBLISHED"));
        assert!(e.inject);
        assert_eq!(e.per_field, vec![s("DRAFT"), s("PUBLISHED")]);
        let e =
            EffectiveStage::decide(&[Some(s("DRAFT")), Some(s("DRAFT"))], None, &s("PUBLISHED"));
        assert!(!e.inject);
        assert_eq!(e.primary(), &s("DRAFT"));
    }
}
