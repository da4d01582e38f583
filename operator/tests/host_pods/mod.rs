//! Pods as host processes, for the cluster tests that run the data path (kwok's pods run
//! nothing): the command and environment of a Deployment's pod template resolved for this host,
//! and its Secret volumes projected into directories the way the kubelet does it, including
//! the updates of a Secret that changes while the process runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, KeyToPath, PodSpec, Secret};
use kube::Api;
use wapipe_core::env as wenv;

/// A host process standing in for one pod; killed when dropped.
pub struct PodProcess {
    child: Child,
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Secret volume of the template, projected into `dir`.
#[derive(Clone, Debug)]
pub struct SecretVolume {
    pub secret: String,
    /// The keys the volume names; `None`: every key of the Secret, as it is now.
    pub items: Option<Vec<KeyToPath>>,
    pub dir: PathBuf,
}

impl SecretVolume {
    /// Files of the volume for `secret` as it is now: `(path, value)`.
    fn files(&self, secret: &Secret) -> BTreeMap<String, Vec<u8>> {
        let data = secret.data.clone().unwrap_or_default();
        match &self.items {
            Some(items) => items
                .iter()
                .filter_map(|item| Some((item.path.clone(), data.get(&item.key)?.0.clone())))
                .collect(),
            None => data
                .into_iter()
                .map(|(key, value)| (key, value.0))
                .collect(),
        }
    }

    /// Reads the Secret from the API and projects it; returns whether the files changed.
    pub async fn sync(&self, secrets: &Api<Secret>) -> bool {
        let secret = secrets.get(&self.secret).await.expect("a mounted Secret");
        project(&self.dir, &self.files(&secret))
    }
}

/// Writes `files` into `dir` as the kubelet's atomic writer does: the values in a new
/// timestamped directory, `..data` swapped to it by one rename, then a `key -> ..data/key`
/// symlink added for each new key and removed for each key gone, and the old directory deleted.
/// A reader following the symlinks sees the old set or the new one, never a mix. Returns
/// whether anything changed.
pub fn project(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let data_link = dir.join("..data");
    let old = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old {
        let current: BTreeMap<String, Vec<u8>> = std::fs::read_dir(dir.join(old))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(entry.path()).unwrap())
            })
            .collect();
        if &current == files {
            return false;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let generation = format!("..{}.{:09}", now.as_secs(), now.subsec_nanos());
    std::fs::create_dir(dir.join(&generation)).unwrap();
    for (path, value) in files {
        std::fs::write(dir.join(&generation).join(path), value).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&generation, &tmp).unwrap();
    std::fs::rename(&tmp, &data_link).unwrap();
    for path in files.keys() {
        let link = dir.join(path);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(path), &link).unwrap();
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !files.contains_key(&name) {
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
    true
}

/// What a pod template says to run, resolved for this host.
pub struct HostCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Its Secret volumes, projected once; [`SecretVolume::sync`] follows later changes.
    #[allow(dead_code)] // cluster_loop projects them once and never follows a change
    pub volumes: Vec<SecretVolume>,
}

/// [`resolve`] for the pod template of `deployment`.
pub async fn resolve_deployment(
    secrets: &Api<Secret>,
    deployment: Deployment,
    bin_dir: &Path,
    files: &Path,
) -> HostCommand {
    let spec = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("the Deployment has a pod template");
    resolve(secrets, &spec, bin_dir, files).await
}

/// Resolves the first container of `spec`: the binary from `bin_dir`, plain env values,
/// `secretKeyRef` env from the Secrets, and every Secret volume projected under `files` with
/// the env values that point into its mount path rewritten to match.
pub async fn resolve(
    secrets: &Api<Secret>,
    spec: &PodSpec,
    bin_dir: &Path,
    files: &Path,
) -> HostCommand {
    let container: &Container = &spec.containers[0];
    let command = container.command.clone().unwrap_or_default();
    let program = bin_dir.join(
        Path::new(command.first().expect("the template names a command"))
            .file_name()
            .unwrap(),
    );
    let mut args: Vec<String> = command[1..].to_vec();
    args.extend(container.args.clone().unwrap_or_default());
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut volumes = Vec::new();
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let volume = spec
            .volumes
            .as_ref()
            .and_then(|v| v.iter().find(|v| v.name == mount.name))
            .expect("a mount names a volume");
        let dir = files.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(source) = &volume.secret {
            let volume = SecretVolume {
                secret: source
                    .secret_name
                    .clone()
                    .expect("a Secret volume names it"),
                items: source.items.clone(),
                dir: dir.clone(),
            };
            volume.sync(secrets).await;
            volumes.push(volume);
        }
        mounts.push((mount.mount_path.clone(), dir));
    }
    let mut env = BTreeMap::new();
    for var in container.env.clone().unwrap_or_default() {
        let value = if let Some(value) = var.value {
            mounts
                .iter()
                .find(|(path, _)| value.starts_with(path.as_str()))
                .map(|(path, dir)| format!("{}{}", dir.display(), &value[path.len()..]))
                .unwrap_or(value)
        } else if let Some(key_ref) = var.value_from.and_then(|v| v.secret_key_ref) {
            let secret = secrets
                .get(&key_ref.name)
                .await
                .expect("a referenced Secret");
            let data = secret.data.unwrap_or_default();
            String::from_utf8(data.get(&key_ref.key).expect("secret key").0.clone()).unwrap()
        } else {
            continue;
        };
        env.insert(var.name, value);
    }
    HostCommand {
        program,
        args,
        env,
        volumes,
    }
}

/// Where a started pod's process listens on the loopback.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// `WAPIPE_LISTEN`: the ingress's webhook, the worker's health and metrics.
    pub http: u16,
    /// `WAPIPE_ADMIN_LISTEN`: the ingress's health, readiness and metrics.
    pub admin: u16,
}

impl HostCommand {
    /// Starts it with `WAPIPE_LISTEN` and `WAPIPE_ADMIN_LISTEN` moved to free loopback ports
    /// (pods would each have their own IP).
    pub fn start(&self, log: &Path) -> (PodProcess, Ports) {
        let ports = Ports {
            http: wapipe_testkit::free_port(),
            admin: wapipe_testkit::free_port(),
        };
        let file = std::fs::File::create(log).unwrap();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(&self.env)
            .env(wenv::LISTEN, format!("127.0.0.1:{}", ports.http));
        if self.env.contains_key(wenv::ADMIN_LISTEN) {
            command.env(wenv::ADMIN_LISTEN, format!("127.0.0.1:{}", ports.admin));
        }
        let child = command
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.program.display()));
        (PodProcess { child }, ports)
    }
}

/// Waits until the ingress's admin port answers `/readyz` with 200; `log` is shown if it never
/// does.
pub async fn wait_ready(http: &reqwest::Client, admin_port: u16, log: &Path, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingress never ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
