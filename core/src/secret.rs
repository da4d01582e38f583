//! Secrets handed to a binary inline (a flag or an environment variable) or in a file (a mounted
//! Kubernetes Secret). Where both are given, the file wins: it is what the operator mounts, while
//! an inline value may be a leftover default.

use std::path::{Path, PathBuf};

/// A secret file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {}", path.display())]
pub struct SecretFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Reads a secret from a file, dropping the trailing newlines that editors and `kubectl create
/// secret --from-file` leave behind.
pub fn read_file(path: &Path) -> Result<String, SecretFileError> {
    std::fs::read_to_string(path)
        .map(|raw| raw.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|source| SecretFileError {
            path: path.to_path_buf(),
            source,
        })
}

/// The secret from `file` when one is named, else `inline`.
pub fn file_or_inline(
    inline: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, SecretFileError> {
    match file {
        Some(path) => read_file(path).map(Some),
        None => Ok(inline.map(str::to_string)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A file `password` holding `contents`, in a directory of this test process's own that
    /// `test` tells apart from other tests' (the directory, then the file).
    pub(crate) fn password_file(test: &str, contents: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("wapipe-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, contents).unwrap();
        (dir, file)
    }

    #[test]
    fn the_file_wins_over_the_inline_value_and_loses_its_trailing_newline() {
        let (dir, file) = password_file("secret", "from-file\r\n");
        assert_eq!(
            file_or_inline(Some("inline"), Some(&file)).unwrap(),
            Some("from-file".to_string())
        );
        assert_eq!(
            file_or_inline(Some("inline"), None).unwrap(),
            Some("inline".to_string())
        );
        assert_eq!(file_or_inline(None, None).unwrap(), None);
        let missing = file_or_inline(Some("inline"), Some(&dir.join("absent"))).unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
