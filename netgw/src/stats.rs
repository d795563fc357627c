//! The stats file (fd 4): `NetworkStats` as JSON, rewritten in place (pwrite at 0, then
//! ftruncate) at most every `INTERVAL` while something changed, and once more at exit.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use boxlite_vmspec::network::NetworkStats;

use crate::error::log_once;

pub const INTERVAL: Duration = Duration::from_millis(500);

pub struct StatsFile {
    file: File,
    written: Option<NetworkStats>,
    last_write: Option<Instant>,
}

impl StatsFile {
    pub fn new(file: File) -> StatsFile {
        StatsFile { file, written: None, last_write: None }
    }

    /// Whether the file holds `stats` already.
    pub fn holds(&self, stats: &NetworkStats) -> bool {
        self.written.as_ref() == Some(stats)
    }

    /// Writes `stats` if they changed and the last write is `INTERVAL` old.
    pub fn maybe_write(&mut self, stats: &NetworkStats, now: Instant) {
        let due = self.last_write.is_none_or(|at| now.duration_since(at) >= INTERVAL);
        if due && !self.holds(stats) {
            self.write(stats);
            self.last_write = Some(now);
        }
    }

    /// Writes `stats` now (a failure is logged: the figures are informative).
    pub fn write(&mut self, stats: &NetworkStats) {
        let json = serde_json::to_vec(stats).expect("NetworkStats always serializes");
        let result = self.file.write_all_at(&json, 0).and_then(|()| self.file.set_len(json.len() as u64));
        match result {
            Ok(()) => self.written = Some(*stats),
            Err(e) => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                log_once(&LOGGED, format_args!("writing the stats file (fd 4): {e}"));
            }
        }
    }
}
