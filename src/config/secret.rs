//! The one way a secret is read: from an environment variable or a file, trimmed of
//! surrounding whitespace, and refused when that leaves nothing. An empty admin token or webhook
//! secret would otherwise *disable* authentication (an empty bearer token matches, an empty
//! HMAC key is anyone's), so emptiness is a start-up (and reload) error, never a default.

use std::path::Path;

/// Where a secret comes from: `*_env` or `*_file` (never both).
pub enum SecretSource<'a> {
    Env(&'a str),
    File(&'a Path),
}

impl<'a> SecretSource<'a> {
    /// `env` / `file` as configured; `Ok(None)` when neither is given.
    pub fn of(env: Option<&'a str>, file: Option<&'a Path>) -> Result<Option<Self>, String> {
        match (env, file) {
            (Some(v), None) => Ok(Some(Self::Env(v))),
            (None, Some(f)) => Ok(Some(Self::File(f))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err("give one of *_env or *_file, not both".into()),
        }
    }

    /// The secret, trimmed; an unset variable, an unreadable file or an empty (or
    /// whitespace-only) value is an error naming its source.
    pub fn read(&self) -> Result<String, String> {
        let (raw, what) = match self {
            Self::Env(var) => (
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
                format!("environment variable {var}"),
            ),
            Self::File(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                format!("file {}", path.display()),
            ),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(format!("{what} is empty: a secret must not be empty"));
        }
        Ok(trimmed.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_whitespace_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("empty", ""), ("blank", " \n\t\n"), ("ok", " s3cret\n")] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let got = SecretSource::File(&p).read();
            if name == "ok" {
                assert_eq!(got.unwrap(), "s3cret");
            } else {
                assert!(got.unwrap_err().contains("is empty"), "{name}");
            }
        }
        assert!(SecretSource::of(Some("A"), Some(Path::new("f"))).is_err());
    }
}
