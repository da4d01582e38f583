//! What `wapipe up` needs from the machine: the binaries it runs, free ports, a state directory
//! no other `wapipe up` uses, the signals that stop it, and the children it started, stopped in
//! order.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::process::{Managed, WorkerPool};

/// Finds `name` in `bin_dir`, beside the running executable, or on `$PATH`.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = bin_dir {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
        bail!("{} not found", path.display());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name(name);
    if beside.is_file() {
        return Ok(beside);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path.with_context(|| {
        format!(
            "{name} is neither beside {} nor on $PATH: build it with \
             `cargo build --release -p wapipe-ingress -p wapipe-worker -p wapipe`",
            exe.display()
        )
    })
}

/// Fails, naming the flag that changes it, when `port` on 127.0.0.1 is taken.
pub fn ensure_port_free(port: u16, what: &str, flag: &str) -> anyhow::Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| {
            anyhow::anyhow!(
                "port {port} on 127.0.0.1 is taken ({e}): something else listens there; \
                 pass another {flag} for the {what}"
            )
        })
}

/// An exclusive lock on `up.lock` in the state directory, held while `wapipe up` runs: a second
/// `wapipe up` on the same directory is refused. The kernel drops the lock when the process
/// exits, however it exits, so a stale file never blocks a later run and no pid is trusted.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
        let path = state_dir.join("up.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another wapipe up uses {}; stop it or pass --state-dir",
                state_dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// Everything `up` started, stopped in order by [`Children::shutdown`].
#[derive(Default)]
pub struct Children {
    pub broker: Option<Managed>,
    pub ingress: Option<Managed>,
    pub pool: Option<WorkerPool>,
}

impl Children {
    /// How many processes are running now (the broker, the ingress and the workers).
    pub fn count(&self) -> usize {
        usize::from(self.broker.is_some())
            + usize::from(self.ingress.is_some())
            + self.pool.as_ref().map_or(0, |pool| pool.pids().len())
    }

    /// Stops the ingress and the workers together (the ingress flushes its producer and the
    /// workers commit, both need the broker), then the broker; waits for every exit.
    pub async fn shutdown(&mut self, grace: Duration) {
        let ingress = self.ingress.take().map(|i| i.stop(grace));
        let workers = async {
            if let Some(pool) = &mut self.pool {
                pool.shutdown().await;
            }
        };
        match ingress {
            Some(ingress) => {
                tokio::join!(ingress, workers);
            }
            None => workers.await,
        }
        if let Some(broker) = self.broker.take() {
            broker.stop(grace).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_refused_with_the_flag_to_change_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = ensure_port_free(port, "ingress", "--port").unwrap_err();
        assert!(error.to_string().contains("--port"), "{error}");
    }

    #[test]
    fn a_state_directory_is_locked_while_held_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::acquire(dir.path()).unwrap();
        let refused = StateLock::acquire(dir.path())
            .err()
            .expect("a second lock is refused");
        assert!(refused.to_string().contains("--state-dir"), "{refused}");
        drop(held);
        StateLock::acquire(dir.path()).expect("the lock is free again once dropped");
    }
}
