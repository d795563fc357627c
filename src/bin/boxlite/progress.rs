//! Progress on stderr (indicatif): a bar per blob while an image is pulled, a spinner while
//! an image's disk is built or a box boots. Nothing is drawn when stderr is not a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxlite::runtime::images::pull::{ProgressFn, PullProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

fn drawing() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with a message and the time spent, until `done`.
pub struct Spinner(ProgressBar);

impl Spinner {
    pub fn new(message: String) -> Spinner {
        if !drawing() {
            return Spinner(ProgressBar::hidden());
        }
        let bar = ProgressBar::new_spinner().with_message(message);
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(bar)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Runs `work` under a spinner.
pub async fn spin<T>(message: String, work: impl std::future::Future<Output = T>) -> T {
    let _spinner = Spinner::new(message);
    work.await
}

/// Bars for a pull: one per blob, created as blobs start arriving.
pub struct PullBars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
}

impl PullBars {
    pub fn new() -> PullBars {
        let target = if drawing() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        PullBars { multi: MultiProgress::with_draw_target(target), bars: Arc::default() }
    }

    /// The callback a pull reports to.
    pub fn callback(&self) -> ProgressFn {
        let (multi, bars) = (self.multi.clone(), self.bars.clone());
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("a valid template")
            .progress_chars("=> ");
        Arc::new(move |progress: &PullProgress| {
            let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
            let bar = bars.entry(progress.digest.as_str().to_string()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(progress.total).with_style(style.clone()));
                bar.set_prefix(progress.digest.hex().chars().take(12).collect::<String>());
                bar
            });
            bar.set_length(progress.total);
            bar.set_position(progress.done.min(progress.total));
            true
        })
    }
}

impl Drop for PullBars {
    fn drop(&mut self) {
        for bar in self.bars.lock().unwrap_or_else(|e| e.into_inner()).values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxlite::runtime::images::store::Digest;

    #[test]
    fn a_pull_gets_a_bar_per_blob_that_follows_its_bytes() {
        let bars = PullBars::new();
        let report = bars.callback();
        let (a, b) = (Digest::of(b"layer a"), Digest::of(b"layer b"));
        assert!(report(&PullProgress { digest: a.clone(), done: 5, total: 10 }), "progress never cancels a pull");
        assert!(report(&PullProgress { digest: b.clone(), done: 0, total: 7 }));
        assert!(report(&PullProgress { digest: a.clone(), done: 12, total: 10 }));
        let shown = bars.bars.lock().unwrap();
        assert_eq!(shown.len(), 2);
        let bar = &shown[a.as_str()];
        assert_eq!((bar.position(), bar.length()), (10, Some(10)), "a blob's bar never runs past its size");
        assert_eq!((shown[b.as_str()].position(), shown[b.as_str()].length()), (0, Some(7)));
    }
}
