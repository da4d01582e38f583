//! The secrets the ingress trusts, and how a change to them reaches a running ingress.
//!
//! A pipeline may trust several app secrets (and verify tokens) at once: several apps whose
//! webhooks land on one endpoint, or the old and the new secret while one is rotated. Each
//! candidate has a name, which is what metrics and logs show (never the value): the file name
//! for a secret read from a file or a directory (a mounted Secret: every key a candidate), and
//! `inline`, `inline-2`, ... for values given on the command line.
//!
//! Files are read again every `--secret-reload-interval`. Kubernetes updates a mounted Secret
//! in place by swapping the directory's `..data` symlink, so the contents are compared rather
//! than any one file's mtime. A new set replaces the old one whole ([`SecretStore`]): a request
//! takes one snapshot and is checked against either the old or the new set, never a mix and
//! never none. A read that fails, or finds no secret at all, keeps the set that was working.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::Error;

/// Most secrets of one kind a pipeline may trust. Every request is checked against all of
/// them, so this bounds what a forged signature costs (one HMAC over the body per secret).
pub const MAX_SECRETS: usize = 16;

/// One trusted value and the name it is known by.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedSecret {
    pub name: String,
    pub value: Vec<u8>,
}

impl NamedSecret {
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> NamedSecret {
        NamedSecret {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Debug for NamedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedSecret({:?})", self.name)
    }
}

/// Every secret the ingress trusts at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// App secrets (Meta) or webhook secrets (WASender): at least one.
    pub signing: Vec<NamedSecret>,
    /// Tokens of Meta's GET handshake; none means handshakes get 403.
    pub verify_tokens: Vec<NamedSecret>,
}

impl Secrets {
    /// One app secret named `inline` and at most one verify token.
    pub fn single(signing: impl Into<Vec<u8>>, verify_token: Option<Vec<u8>>) -> Secrets {
        Secrets {
            signing: vec![NamedSecret::new("inline", signing)],
            verify_tokens: verify_token
                .map(|token| vec![NamedSecret::new("inline", token)])
                .unwrap_or_default(),
        }
    }

    /// The values of `candidates`, in order, for the signature checks.
    pub fn values(candidates: &[NamedSecret]) -> Vec<&[u8]> {
        candidates.iter().map(|s| s.value.as_slice()).collect()
    }
}

/// Where secrets of one kind come from: inline values, files, directories of files.
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    pub what: &'static str,
    pub inline: Vec<String>,
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    /// In directories, only files whose names start with this are candidates (a Secret that
    /// also holds other keys, such as the verify token beside the app secret).
    pub prefix: Option<String>,
}

impl SecretSource {
    /// Whether anything here can change while the ingress runs.
    pub fn has_files(&self) -> bool {
        !self.files.is_empty() || !self.dirs.is_empty()
    }

    /// Reads every candidate. Files and directories win over inline values (an inline value
    /// may be a leftover default; files are what the operator mounts). Empty values are
    /// dropped: an empty key would accept a signature anyone can compute.
    pub fn load(&self) -> Result<Vec<NamedSecret>, Error> {
        let mut found = Vec::new();
        if self.has_files() {
            for path in &self.files {
                let value = wapipe_core::secret::read_file(path).map_err(|e| self.error(e))?;
                found.push(NamedSecret::new(file_name(path), value));
            }
            for dir in &self.dirs {
                found.extend(self.read_dir(dir)?);
            }
        } else {
            let numbered = self.inline.len() > 1;
            for (i, value) in self.inline.iter().enumerate() {
                let name = if numbered {
                    format!("inline-{}", i + 1)
                } else {
                    "inline".to_string()
                };
                found.push(NamedSecret::new(name, value.as_bytes()));
            }
        }
        found.retain(|secret| !secret.value.is_empty());
        if found.len() > MAX_SECRETS {
            return Err(Error::TooManySecrets {
                what: self.what,
                count: found.len(),
                max: MAX_SECRETS,
            });
        }
        let mut names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::DuplicateSecretName {
                what: self.what,
                name: pair[0].to_string(),
            });
        }
        Ok(found)
    }

    /// Every key of a mounted Secret: the files whose names do not start with a dot (the
    /// kubelet's `..data` and timestamped directories do). A key whose symlink dangles for a
    /// moment during the kubelet's swap is skipped, not an error.
    fn read_dir(&self, dir: &Path) -> Result<Vec<NamedSecret>, Error> {
        let entries = std::fs::read_dir(dir).map_err(|source| self.io_error(dir, source))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| self.io_error(dir, source))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let prefixed = self.prefix.as_deref().is_none_or(|p| name.starts_with(p));
            if name.starts_with('.') || !prefixed {
                continue;
            }
            let path = entry.path();
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(self.io_error(&path, source)),
            }
            match wapipe_core::secret::read_file(&path) {
                Ok(value) => found.push(NamedSecret::new(name, value)),
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.error(e)),
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn error(&self, e: wapipe_core::secret::SecretFileError) -> Error {
        self.io_error(&e.path, e.source)
    }

    fn io_error(&self, path: &Path, source: std::io::Error) -> Error {
        Error::ReadSecret {
            what: self.what,
            path: path.to_path_buf(),
            source,
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Where the app secrets and verify tokens come from.
#[derive(Debug, Clone)]
pub struct SecretSources {
    pub signing: SecretSource,
    pub verify_tokens: SecretSource,
}

impl SecretSources {
    /// Reads both kinds; at least one app secret is required.
    pub fn load(&self) -> Result<Secrets, Error> {
        let signing = self.signing.load()?;
        if signing.is_empty() {
            return Err(Error::MissingSecret(
                "an app secret (--app-secret, --app-secret-file or --app-secret-dir) is required \
                 to verify signatures",
            ));
        }
        Ok(Secrets {
            signing,
            verify_tokens: self.verify_tokens.load()?,
        })
    }

    /// Whether a running ingress should watch for changes.
    pub fn has_files(&self) -> bool {
        self.signing.has_files() || self.verify_tokens.has_files()
    }
}

/// The set in use, replaced whole when the files change.
#[derive(Debug)]
pub struct SecretStore {
    current: RwLock<Arc<Secrets>>,
}

impl SecretStore {
    pub fn new(secrets: Secrets) -> SecretStore {
        SecretStore {
            current: RwLock::new(Arc::new(secrets)),
        }
    }

    /// The set a request is checked against, from start to end.
    pub fn current(&self) -> Arc<Secrets> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts `secrets` in use unless they equal the current set; returns the set replaced.
    pub fn replace(&self, secrets: Secrets) -> Option<Arc<Secrets>> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if **current == secrets {
            return None;
        }
        Some(std::mem::replace(&mut *current, Arc::new(secrets)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(inline: &[&str], files: &[PathBuf], dirs: &[PathBuf]) -> SecretSource {
        SecretSource {
            what: "app secret",
            inline: inline.iter().map(|s| s.to_string()).collect(),
            files: files.to_vec(),
            dirs: dirs.to_vec(),
            prefix: None,
        }
    }

    fn names(secrets: &[NamedSecret]) -> Vec<&str> {
        secrets.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn every_key_of_a_mounted_secret_is_a_candidate_named_by_its_file() {
        let dir = tempfile::tempdir().unwrap();
        // The kubelet's layout: keys are symlinks through `..data` to a timestamped directory.
        let data = dir.path().join("..2026_12_05_10_00_00.1");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("app-a"), "secret-a\n").unwrap();
        std::fs::write(data.join("app-b"), "secret-b").unwrap();
        std::fs::write(data.join("empty"), "").unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("..data")).unwrap();
        for key in ["app-a", "app-b", "empty"] {
            std::os::unix::fs::symlink(Path::new("..data").join(key), dir.path().join(key))
                .unwrap();
        }
        // A key removed from ..data whose symlink is not yet gone.
        std::os::unix::fs::symlink("..data/gone", dir.path().join("gone")).unwrap();
        let found = source(&["ignored"], &[], &[dir.path().to_path_buf()])
            .load()
            .unwrap();
        assert_eq!(names(&found), ["app-a", "app-b"]);
        assert_eq!(found[0].value, b"secret-a");
        assert!(!format!("{found:?}").contains("secret-a"));
    }

    #[test]
    fn with_a_prefix_only_the_keys_that_start_with_it_are_candidates() {
        let dir = tempfile::tempdir().unwrap();
        for key in ["app-secret", "app-secret-2026-12", "verify-token"] {
            std::fs::write(dir.path().join(key), key).unwrap();
        }
        let mut source = source(&[], &[], &[dir.path().to_path_buf()]);
        source.prefix = Some("app-secret".into());
        assert_eq!(
            names(&source.load().unwrap()),
            ["app-secret", "app-secret-2026-12"]
        );
    }

    #[test]
    fn inline_values_are_numbered_and_more_than_the_bound_is_refused() {
        assert_eq!(names(&source(&["x"], &[], &[]).load().unwrap()), ["inline"]);
        assert_eq!(
            names(&source(&["x", "y"], &[], &[]).load().unwrap()),
            ["inline-1", "inline-2"]
        );
        let many: Vec<String> = (0..=MAX_SECRETS).map(|i| format!("s{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let error = source(&many, &[], &[]).load().unwrap_err().to_string();
        assert!(error.contains("at most 16"), "{error}");
    }

    #[test]
    fn two_secrets_of_one_name_are_refused() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        std::fs::write(one.path().join("app"), "a").unwrap();
        std::fs::write(two.path().join("app"), "b").unwrap();
        let error = source(&[], &[], &[one.path().into(), two.path().into()])
            .load()
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"app\""), "{error}");
    }

    #[test]
    fn the_store_swaps_only_a_different_set() {
        let store = SecretStore::new(Secrets::single("old", None));
        assert!(store.replace(Secrets::single("old", None)).is_none());
        let before = store.current();
        let replaced = store.replace(Secrets::single("new", None)).unwrap();
        assert_eq!(replaced, before);
        assert_eq!(store.current().signing[0].value, b"new");
        // A snapshot taken before the swap still holds the old set whole.
        assert_eq!(before.signing[0].value, b"old");
    }
}
