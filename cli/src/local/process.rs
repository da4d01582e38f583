//! Child processes of `wapipe up`: the broker, the ingress and the worker pool. Each runs in its
//! own process group (a terminal's Ctrl-C reaches only `wapipe up`, which then stops them in
//! order), logs to a file in the state directory, and is killed if its handle is dropped.
//! Stopping is SIGTERM, then SIGKILL after a grace period, and always waits for the exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use rustix::process::{kill_process, Pid, Signal};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How a process is started; kept so a crashed worker can be started again the same way.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub current_dir: Option<PathBuf>,
    pub log: PathBuf,
}

/// A running child process.
#[derive(Debug)]
pub struct Managed {
    pub spec: Spec,
    child: Child,
    pid: u32,
}

impl Managed {
    pub fn spawn(spec: Spec) -> anyhow::Result<Managed> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let mut command = Command::new(&spec.program);
        // Only the settings given here: a WAPIPE_* variable of the user's shell must not change
        // what a child does behind the pipeline's back.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WAPIPE_") {
                command.env_remove(key);
            }
        }
        command
            .args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.current_dir {
            command.current_dir(dir);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        let pid = child.id().context("the child exited before it got a pid")?;
        Ok(Managed { spec, child, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns once the process is gone.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, Signal::TERM);
            }
            if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                return status.ok();
            }
            let _ = self.child.start_kill();
        }
        self.child.wait().await.ok()
    }

    /// The last `lines` lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts the `index`-th worker.
pub type WorkerFactory = Box<dyn Fn(u32) -> Spec + Send>;

/// The worker processes, resized to what the scaling policy decides.
pub struct WorkerPool {
    factory: WorkerFactory,
    running: Vec<Managed>,
    stopping: Vec<JoinHandle<()>>,
    next_index: u32,
    grace: Duration,
    /// Workers that exited on their own and were started again.
    pub restarts: u32,
}

impl WorkerPool {
    pub fn new(factory: WorkerFactory, grace: Duration) -> Self {
        WorkerPool {
            factory,
            running: Vec::new(),
            stopping: Vec::new(),
            next_index: 0,
            grace,
            restarts: 0,
        }
    }

    /// Workers running now (not counting those being stopped).
    pub fn current(&self) -> u32 {
        u32::try_from(self.running.len()).unwrap_or(u32::MAX)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.running.iter().map(Managed::pid).collect()
    }

    /// Pids of workers asked to stop that have not exited yet.
    pub fn stopping(&self) -> usize {
        self.stopping.iter().filter(|h| !h.is_finished()).count()
    }

    /// Starts or stops workers until `desired` run. The newest are stopped first.
    pub fn scale_to(&mut self, desired: u32) -> anyhow::Result<()> {
        self.stopping.retain(|h| !h.is_finished());
        while self.current() < desired {
            let spec = (self.factory)(self.next_index);
            self.next_index += 1;
            self.running.push(Managed::spawn(spec)?);
        }
        while self.current() > desired {
            if let Some(worker) = self.running.pop() {
                let grace = self.grace;
                self.stopping.push(tokio::spawn(async move {
                    worker.stop(grace).await;
                }));
            }
        }
        Ok(())
    }

    /// Starts again every worker that exited on its own; returns a line per restart.
    pub fn restart_exited(&mut self) -> anyhow::Result<Vec<String>> {
        let mut notices = Vec::new();
        for worker in &mut self.running {
            if let Some(status) = worker.exited() {
                notices.push(format!(
                    "{} (pid {}) exited with {status}; starting it again. Last log lines:\n{}",
                    worker.name(),
                    worker.pid(),
                    worker.log_tail(5)
                ));
                let replacement = Managed::spawn(worker.spec.clone())?;
                *worker = replacement;
                self.restarts += 1;
            }
        }
        Ok(notices)
    }

    /// Stops every worker at once and waits for all of them.
    pub async fn shutdown(&mut self) {
        let grace = self.grace;
        let stops: Vec<_> = self.running.drain(..).map(|w| w.stop(grace)).collect();
        futures::future::join_all(stops).await;
        for handle in self.stopping.drain(..) {
            let _ = handle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(program: &str, args: &[&str], dir: &Path) -> WorkerPool {
        let (program, args, dir) = (
            PathBuf::from(program),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            dir.to_path_buf(),
        );
        WorkerPool::new(
            Box::new(move |index| Spec {
                name: format!("worker-{index}"),
                program: program.clone(),
                args: args.clone(),
                env: BTreeMap::new(),
                current_dir: None,
                log: dir.join(format!("worker-{index}.log")),
            }),
            Duration::from_secs(5),
        )
    }

    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                !stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn the_pool_grows_shrinks_newest_first_and_shuts_down_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = pool("sleep", &["600"], dir.path());
        pool.scale_to(3).unwrap();
        let pids = pool.pids();
        assert_eq!(pids.len(), 3);
        pool.scale_to(1).unwrap();
        assert_eq!(pool.pids(), vec![pids[0]]);
        // Stopping happens in the background; wait for it the way `up` does at shutdown.
        for handle in pool.stopping.drain(..) {
            handle.await.unwrap();
        }
        assert!(!running(pids[1]) && !running(pids[2]));
        pool.shutdown().await;
        assert_eq!(pool.current(), 0);
        assert!(pids.iter().all(|&pid| !running(pid)));
    }

    #[tokio::test]
    async fn a_worker_that_exits_on_its_own_is_started_again_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = pool("true", &[], dir.path());
        pool.scale_to(1).unwrap();
        let first = pool.pids()[0];
        let mut notices = Vec::new();
        while notices.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            notices = pool.restart_exited().unwrap();
        }
        assert_eq!(pool.restarts, 1);
        assert_eq!(pool.current(), 1);
        assert_ne!(pool.pids()[0], first);
        assert!(notices[0].contains("worker-0"), "{}", notices[0]);
        pool.shutdown().await;
    }
}
