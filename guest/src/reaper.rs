//! The one place that waits for children. As PID 1 the agent inherits every orphan in the
//! VM, and a `waitpid(-1)` for those would steal the exit status of processes it started
//! itself; so one loop reaps everything and hands each exit to whoever registered its pid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::log;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Default)]
struct State {
    /// Registered pids and where their exit goes.
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
}

#[derive(Default, Clone)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

impl Reaper {
    /// Spawns a process with `spawn` and registers its pid before the reaper can see it exit:
    /// the lock is held across the spawn, so the exit cannot be reaped in between.
    pub fn spawn<T, E>(&self, spawn: impl FnOnce() -> Result<(T, u32), E>) -> Result<(T, u32, oneshot::Receiver<Exit>), E> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (value, pid) = spawn()?;
        let (tx, rx) = oneshot::channel();
        state.waiting.insert(pid as i32, tx);
        Ok((value, pid, rx))
    }

    /// Reaps children forever, on every SIGCHLD.
    pub async fn run(self) {
        let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
            Ok(s) => s,
            Err(e) => {
                log!("cannot watch SIGCHLD, children will not be reaped: {e}");
                return;
            }
        };
        loop {
            self.reap_all();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    }

    fn reap_all(&self) {
        loop {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, Exit::Signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue, // stopped/continued: not an exit
            };
            if let Some(tx) = state.waiting.remove(&pid.as_raw()) {
                let _ = tx.send(exit);
            }
        }
    }
}
