//! Flow control: a consumer that stops reading must slow the process down, not grow the
//! host's memory. Its own test binary, so that no other test shares the RSS it measures.

mod common;

use std::time::Duration;

use boxlite::ExecCommand;
use common::{boot_busybox, RunDir};

fn rss_mib() -> f64 {
    boxlite::runtime::vm::rss_kib(std::process::id()).expect("VmRSS of this process") as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_of_a_gigabyte_keeps_host_memory_bounded() {
    const TOTAL: usize = 1_000_000_000;
    let dir = RunDir::new("exec-flow");
    let vm = boot_busybox(&dir).await;
    // dd with 1 MB blocks: busybox head's small buffers would make this a 100 s test.
    let writer = ExecCommand::new("dd").args(["if=/dev/zero", "bs=1000000", "count=1000"]);
    let mut execution = vm.exec(writer).await.unwrap();
    let mut stdout = execution.take_stdout().unwrap();

    let first = stdout.next_chunk().await.unwrap().unwrap();
    let before = rss_mib();
    tokio::time::sleep(Duration::from_secs(2)).await; // the process keeps writing meanwhile
    let during = rss_mib();

    let mut received = first.len();
    let mut peak = during;
    let mut nonzero = first.iter().filter(|&&b| b != 0).count();
    while let Some(chunk) = stdout.next_chunk().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        nonzero += chunk.iter().filter(|&&b| b != 0).count();
        if received % (64 << 20) < chunk.len() {
            peak = peak.max(rss_mib());
        }
    }
    assert!(execution.wait().await.unwrap().success());
    eprintln!("RSS: {before:.1} MiB before the stall, {during:.1} MiB after 2 s, peak {peak:.1} MiB");
    assert_eq!(received, TOTAL, "output incomplete");
    assert_eq!(nonzero, 0, "output corrupted");
    assert!(during - before < 256.0, "host RSS grew {:.1} MiB while the reader stalled", during - before);
    assert!(peak - before < 256.0, "host RSS grew {:.1} MiB while streaming", peak - before);
}
