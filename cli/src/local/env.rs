//! What the local ingress and workers are told: their environment (the same `WAPIPE_*`
//! variables the operator writes into the pod templates), where rows go, and the secrets, kept
//! in the state directory between runs.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::time::Duration;
use wapipe_core::env as wenv;

use anyhow::{bail, Context};

use super::pipeline::LocalPipeline;

/// Where the workers write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkChoice {
    Sqlite(PathBuf),
    Postgres(String),
}

impl SinkChoice {
    pub fn from_url(url: Option<&str>, state_dir: &Path) -> anyhow::Result<SinkChoice> {
        match url {
            None => Ok(SinkChoice::Sqlite(state_dir.join("wapipe.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(SinkChoice::Postgres(url.to_string()))
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => Ok(SinkChoice::Sqlite(PathBuf::from(path))),
                _ => bail!(
                    "--database-url must be postgres://..., postgresql://... or sqlite://PATH"
                ),
            },
        }
    }

    fn env(&self) -> BTreeMap<String, String> {
        match self {
            SinkChoice::Sqlite(path) => BTreeMap::from([
                (wenv::SINK.into(), "sqlite".into()),
                (wenv::SQLITE_PATH.into(), path.display().to_string()),
            ]),
            SinkChoice::Postgres(url) => BTreeMap::from([
                (wenv::SINK.into(), "postgres".into()),
                (wenv::DATABASE_URL.into(), url.clone()),
            ]),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SinkChoice::Sqlite(path) => format!("SQLite {}", path.display()),
            SinkChoice::Postgres(_) => "PostgreSQL (--database-url)".to_string(),
        }
    }
}

/// Where a secret came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Given,
    Kept,
    Generated,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Given => "given",
            Origin::Kept => "kept",
            Origin::Generated => "generated",
        }
    }
}

/// A secret from the flag, else the one kept in `file`, else a new random one written there
/// (mode 0600).
pub fn secret(given: Option<&str>, file: &Path) -> anyhow::Result<(String, Origin)> {
    if let Some(secret) = given.filter(|s| !s.is_empty()) {
        return Ok((secret.to_string(), Origin::Given));
    }
    if let Ok(kept) = std::fs::read_to_string(file) {
        let kept = kept.trim().to_string();
        if !kept.is_empty() {
            return Ok((kept, Origin::Kept));
        }
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("reading /dev/urandom")?;
    let secret = hex::encode(bytes);
    std::fs::write(file, &secret).with_context(|| format!("writing {}", file.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    Ok((secret, Origin::Generated))
}

/// The name of the secret `--app-secret` gives (or `wapipe up` generates).
pub const DEFAULT_APP: &str = "app-secret";

/// Parses `--app NAME=SECRET`. The name becomes a file name and a path segment
/// (`/webhook/NAME`), so it is kept to letters, digits, `-`, `_` and `.`, not leading.
pub fn parse_app(text: &str) -> Result<(String, String), String> {
    let (name, secret) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=SECRET, got {:?}", text.split('=').next()))?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if name.is_empty() || name.len() > 63 || name.starts_with('.') || !name.bytes().all(plain) {
        return Err(format!(
            "app name {name:?}: 1 to 63 letters, digits, '-', '_' or '.', not starting with '.'"
        ));
    }
    if secret.is_empty() {
        return Err(format!("app {name}: the secret is empty"));
    }
    Ok((name.to_string(), secret.to_string()))
}

/// Writes one file per app (named by the app, holding its secret) into `dir`, replacing what
/// an earlier run left there, and returns `dir`: the ingress's `--app-secret-dir`.
pub fn write_app_secrets(dir: &Path, apps: &[(String, String)]) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<&str> = apps.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!("two apps are named {:?}", pair[0]);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for (name, secret) in apps {
        let file = dir.join(name);
        std::fs::write(&file, secret).with_context(|| format!("writing {}", file.display()))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(dir.to_path_buf())
}

/// The ingress's settings.
pub struct IngressEnv<'a> {
    /// The webhook's port.
    pub port: u16,
    /// The admin port: health, readiness and the metrics `wapipe up` reads.
    pub admin_port: u16,
    pub brokers: &'a str,
    /// Every app secret, one file each (see [`write_app_secrets`]).
    pub app_secret_dir: &'a Path,
    pub verify_token: &'a str,
    pub produce_timeout: Duration,
}

/// The ingress's environment.
pub fn ingress(pipeline: &LocalPipeline, settings: &IngressEnv<'_>) -> BTreeMap<String, String> {
    let spec = &pipeline.spec;
    let mut env = BTreeMap::from([
        (
            wenv::LISTEN.to_string(),
            format!("127.0.0.1:{}", settings.port),
        ),
        (
            wenv::ADMIN_LISTEN.to_string(),
            format!("127.0.0.1:{}", settings.admin_port),
        ),
        (wenv::PROVIDER.into(), pipeline.provider().as_str().into()),
        (
            wenv::APP_SECRET_DIR.into(),
            settings.app_secret_dir.display().to_string(),
        ),
        (wenv::SECRET_RELOAD_INTERVAL.into(), "1s".into()),
        (wenv::VERIFY_TOKEN.into(), settings.verify_token.into()),
        (wenv::TOPIC.into(), spec.topic.name.clone()),
        (wenv::KAFKA_BROKERS.into(), settings.brokers.into()),
        (wenv::READINESS_INTERVAL.into(), "1s".into()),
        (
            wenv::PRODUCE_TIMEOUT.into(),
            humantime::format_duration(settings.produce_timeout).to_string(),
        ),
        (wenv::SHUTDOWN_TIMEOUT.into(), "10s".into()),
    ]);
    if let Some(max) = spec.ingress.max_body_bytes {
        env.insert(wenv::MAX_BODY_BYTES.into(), max.to_string());
    }
    env
}

/// A worker's environment. Each worker serves its metrics on a port of its own that the
/// kernel picks (nothing here scrapes them; a fixed port would collide between workers).
pub fn worker(
    pipeline: &LocalPipeline,
    brokers: &str,
    sink: &SinkChoice,
) -> BTreeMap<String, String> {
    let spec = &pipeline.spec;
    let mut env = sink.env();
    env.extend([
        (wenv::KAFKA_BROKERS.to_string(), brokers.to_string()),
        (wenv::TOPIC.into(), spec.topic.name.clone()),
        (
            wenv::DEAD_LETTER_TOPIC.into(),
            spec.dead_letter_topic.name.clone(),
        ),
        (wenv::GROUP.into(), pipeline.consumer_group.clone()),
        (
            wenv::MAX_ATTEMPTS.into(),
            spec.worker.max_attempts.to_string(),
        ),
        (wenv::DRAIN_TIMEOUT.into(), "10s".into()),
        (wenv::LISTEN.into(), "127.0.0.1:0".into()),
    ]);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_is_sqlite_in_the_state_dir_unless_a_url_says_otherwise() {
        let dir = Path::new("/tmp/state");
        assert_eq!(
            SinkChoice::from_url(None, dir).unwrap(),
            SinkChoice::Sqlite(dir.join("wapipe.db"))
        );
        assert_eq!(
            SinkChoice::from_url(Some("postgres://root@127.0.0.1/test"), dir).unwrap(),
            SinkChoice::Postgres("postgres://root@127.0.0.1/test".into())
        );
        assert_eq!(
            SinkChoice::from_url(Some("sqlite:///var/rows.db"), dir).unwrap(),
            SinkChoice::Sqlite("/var/rows.db".into())
        );
        assert!(SinkChoice::from_url(Some("mysql://x"), dir).is_err());
    }

    #[test]
    fn apps_are_name_equals_secret_with_a_plain_name() {
        assert_eq!(
            parse_app("shop-a=s3cr=t").unwrap(),
            ("shop-a".to_string(), "s3cr=t".to_string())
        );
        for bad in ["no-equals", "=secret", ".hidden=x", "a/b=x", "empty="] {
            assert!(parse_app(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_secrets_replace_the_directory_and_two_of_one_name_are_refused() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("app-secrets");
        let apps = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect()
        };
        write_app_secrets(&dir, &apps(&[("old", "x"), ("a", "1")])).unwrap();
        write_app_secrets(&dir, &apps(&[("a", "1"), ("b", "2")])).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["a", "b"]);
        assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "2");
        assert!(write_app_secrets(&dir, &apps(&[("a", "1"), ("a", "2")])).is_err());
    }

    #[test]
    fn a_secret_is_generated_once_then_kept_and_a_given_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app-secret");
        let (first, origin) = secret(None, &file).unwrap();
        assert_eq!(origin, Origin::Generated);
        assert_eq!(first.len(), 32);
        assert_eq!(secret(None, &file).unwrap(), (first, Origin::Kept));
        assert_eq!(
            secret(Some("mine"), &file).unwrap(),
            ("mine".to_string(), Origin::Given)
        );
    }
}
