//! Boxes that last: state survives stop/start and a new runtime on the same home; a killed
//! shim leaves a stopped box that starts again with its data; a crash during create leaves
//! nothing that blocks; a record that cannot be loaded is moved aside, never deleted; a
//! killed shim or host process leaves no cgroup behind; many boxes of one image run at once; metrics add up.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxlite::{BoxOptions, BoxStatus, BoxliteRuntime, EngineChoice, Error, ExecCommand, RuntimeOptions};
use common::{process_alive, wait_gone, RunDir};

const IMAGE: &str = "localhost/boxlite/busybox:latest";

fn runtime(dir: &RunDir) -> BoxliteRuntime {
    BoxliteRuntime::new(RuntimeOptions { home: Some(dir.0.join("home")), engine: EngineChoice::Qemu, ..Default::default() }).unwrap()
}

fn with_image(dir: &RunDir) -> BoxliteRuntime {
    let rt = runtime(dir);
    let layout = boxlite::runtime::helpers::cache_dir().join("test-images/busybox");
    assert!(layout.join("index.json").is_file(), "run scripts/build-test-images.sh");
    rt.images().import_layout(&layout, Some("latest"), IMAGE).unwrap();
    rt
}

fn sh(script: &str) -> ExecCommand {
    ExecCommand::new("sh").args(["-c", script])
}

async fn stdout(lite_box: &boxlite::LiteBox, script: &str) -> String {
    let out = lite_box.exec_output(sh(script)).await.unwrap();
    assert!(out.status.success(), "{script}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_installed_programs_survive_restarts_and_new_runtimes() {
    let dir = RunDir::new("last-state");
    let id = {
        let rt = with_image(&dir);
        let worker = rt.create_box(BoxOptions { name: Some("worker".into()), image: Some(IMAGE.into()), ..Default::default() }).unwrap();
        stdout(&worker, "set -e; echo 'notes from yesterday' > /root/notes.txt; mkdir -p /usr/local/bin; printf '#!/bin/sh\\necho installed $1\\n' > /usr/local/bin/mytool; chmod +x /usr/local/bin/mytool; sync").await;
        worker.restart().await.unwrap();
        assert_eq!(worker.metrics().boots, 2);
        assert_eq!(stdout(&worker, "cat /root/notes.txt").await, "notes from yesterday\n");
        worker.stop().await.unwrap();
        worker.id().to_string()
    };
    // A new runtime on the same home finds the box, stopped, and its disk.
    let rt = runtime(&dir);
    let worker = rt.get_box("worker").expect("the box is found by name");
    assert_eq!(worker.id(), id);
    assert_eq!(worker.status(), BoxStatus::Stopped);
    assert_eq!(stdout(&worker, "cat /root/notes.txt; mytool ok").await, "notes from yesterday\ninstalled ok\n");
    assert_eq!(worker.image(), Some(IMAGE));
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shim_fails_the_exec_fast_and_the_box_starts_again_with_its_data() {
    let dir = RunDir::new("last-kill");
    let rt = with_image(&dir);
    let victim = rt.create_box(BoxOptions { name: Some("victim".into()), image: Some(IMAGE.into()), ..Default::default() }).unwrap();
    stdout(&victim, "echo kept > /root/synced; sync").await;
    let sleeper = victim.exec(ExecCommand::new("sleep").arg("100")).await.unwrap();
    let shim_pid: u32 = std::fs::read_to_string(victim.dir().join("shim.pid")).unwrap().trim().parse().unwrap();
    let killed_at = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim_pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let error = tokio::time::timeout(Duration::from_secs(1), sleeper.wait()).await.expect("the exec must fail within 1 s").unwrap_err();
    eprintln!("exec failed after {:?}: {error}", killed_at.elapsed());
    assert!(matches!(error, Error::ShimExited { .. }), "{error}");
    assert!(error.to_string().contains("killed by signal 9"), "{error}");
    let deadline = Instant::now() + Duration::from_secs(1);
    while victim.status() != BoxStatus::Stopped && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(victim.status(), BoxStatus::Stopped);
    assert!(victim.stop_reason().unwrap_or_default().contains("signal 9"), "{:?}", victim.stop_reason());
    // The record says so too, for the next runtime.
    let record = std::fs::read_to_string(victim.dir().join("config.json")).unwrap();
    assert!(record.contains("\"stopped\"") && record.contains("signal 9"), "{record}");

    victim.start().await.unwrap();
    assert_eq!(stdout(&victim, "cat /root/synced").await, "kept\n");
    victim.stop().await.unwrap();
}

#[test]
fn a_crash_during_create_leaves_nothing_that_blocks() {
    let dir = RunDir::new("last-crash");
    {
        let rt = runtime(&dir);
        rt.create_box(BoxOptions { name: Some("kept".into()), ..Default::default() }).unwrap();
    }
    // What a crash between mkdir and the record leaves: an empty directory (swept), and one
    // with a torn record (moved aside: a record that does not parse is never taken for junk).
    let boxes = dir.0.join("home/boxes");
    std::fs::create_dir_all(boxes.join("0123456789ab")).unwrap();
    std::fs::create_dir_all(boxes.join("ba9876543210")).unwrap();
    std::fs::write(boxes.join("ba9876543210/config.json"), b"{\"id\":\"ba98").unwrap();
    let rt = runtime(&dir);
    assert!(!boxes.join("0123456789ab").exists(), "an empty half box is swept");
    assert!(
        !boxes.join("ba9876543210").exists() && boxes.join(".invalid-ba9876543210/config.json").is_file(),
        "a torn record is moved aside"
    );
    assert_eq!(rt.list_boxes().len(), 1);
    assert!(rt.get_box("kept").is_some());
    rt.create_box(BoxOptions { name: Some("fresh".into()), ..Default::default() }).unwrap();
}

/// The reasons `invalid_boxes` gives, by id, for assertion messages.
fn invalid(rt: &BoxliteRuntime) -> Vec<(String, std::path::PathBuf, String)> {
    rt.invalid_boxes().into_iter().map(|b| (b.id, b.dir, b.reason)).collect()
}

#[test]
fn a_corrupt_record_is_moved_aside_with_its_disk_and_a_newer_one_is_left_untouched() {
    let dir = RunDir::new("last-invalid");
    let boxes = dir.0.join("home/boxes");
    let (kept, corrupt, future) = {
        let rt = runtime(&dir);
        let ids: Vec<String> = ["kept", "corrupt", "future"]
            .into_iter()
            .map(|name| rt.create_box(BoxOptions { name: Some(name.into()), ..Default::default() }).unwrap().id().to_string())
            .collect();
        assert!(rt.invalid_boxes().is_empty(), "{:?}", invalid(&rt));
        (ids[0].clone(), ids[1].clone(), ids[2].clone())
    };
    // The corrupt box has a disk: the user's data, which must survive its record.
    std::fs::write(boxes.join(&corrupt).join("config.json"), b"\x00garbage{{ not json").unwrap();
    std::fs::write(boxes.join(&corrupt).join("disk.qcow2"), b"the user's data").unwrap();
    // A newer boxlite's record: another format, and fields this one cannot read.
    let future_record = br#"{"format": 99, "id": "IDPLACEHOLDER", "options": "changed in format 99", "status": {"new": true}}"#;
    let future_record = String::from_utf8_lossy(future_record).replace("IDPLACEHOLDER", &future);
    std::fs::write(boxes.join(&future).join("config.json"), &future_record).unwrap();

    let rt = runtime(&dir);
    let listed: Vec<String> = rt.list_boxes().iter().map(|b| b.id().to_string()).collect();
    assert_eq!(listed, [kept.as_str()], "only the valid box loads");
    let found = invalid(&rt);
    assert_eq!(found.len(), 2, "{found:?}");
    let aside = boxes.join(format!(".invalid-{corrupt}"));
    let (id, at, reason) =
        found.iter().find(|(id, ..)| *id == corrupt).unwrap_or_else(|| panic!("the corrupt box is not listed: {found:?}"));
    assert_eq!((id, at), (&corrupt, &aside), "{found:?}");
    assert!(reason.contains("corrupt"), "{reason}");
    assert!(!boxes.join(&corrupt).exists(), "the corrupt box stayed in place");
    assert_eq!(std::fs::read(aside.join("disk.qcow2")).unwrap(), b"the user's data", "the disk is kept");
    let (_, at, reason) = found.iter().find(|(id, ..)| *id == future).unwrap_or_else(|| panic!("the newer box is not listed: {found:?}"));
    assert_eq!(at, &boxes.join(&future), "a newer boxlite's box stays where it is");
    assert!(reason.contains("written by a newer boxlite (format 99, this one reads up to 2); upgrade boxlite to use it"), "{reason}");
    assert_eq!(std::fs::read_to_string(boxes.join(&future).join("config.json")).unwrap(), future_record, "the newer record was changed");
    assert!(rt.create_box(BoxOptions { name: Some("another".into()), ..Default::default() }).is_ok());
    drop(rt);

    // A later runtime still reports both (the reason of the one moved aside from its
    // invalid-reason.txt), and a second bad directory of the same id gets its own name.
    std::fs::create_dir_all(boxes.join(&corrupt)).unwrap();
    // A whole record, but another box's: its id does not match its directory.
    std::fs::copy(boxes.join(&kept).join("config.json"), boxes.join(&corrupt).join("config.json")).unwrap();
    let rt = runtime(&dir);
    let found = invalid(&rt);
    assert_eq!(found.len(), 3, "{found:?}");
    let second = boxes.join(format!(".invalid-{corrupt}-2"));
    assert!(found.iter().any(|(id, at, reason)| *id == corrupt && *at == aside && reason.contains("corrupt")), "{found:?}");
    assert!(
        found.iter().any(|(id, at, reason)| *id == corrupt && *at == second && reason.contains(&format!("names box {kept:?}"))),
        "{found:?}"
    );
    assert!(aside.join("disk.qcow2").is_file() && second.join("config.json").is_file());
    assert_eq!(rt.list_boxes().len(), 2, "kept and another");
}

#[test]
fn a_record_keeps_its_creation_time_and_a_record_from_before_formats_still_loads() {
    let dir = RunDir::new("last-format");
    let before = std::time::SystemTime::now();
    let (new_id, old_id, networked_id) = {
        let rt = runtime(&dir);
        let new = rt.create_box(BoxOptions { name: Some("new".into()), ..Default::default() }).unwrap();
        let old = rt.create_box(BoxOptions { name: Some("old".into()), ..Default::default() }).unwrap();
        let networked = BoxOptions { name: Some("networked".into()), network: boxlite::NetworkOptions::none(), ..Default::default() };
        let networked = rt.create_box(networked).unwrap();
        (new.id().to_string(), old.id().to_string(), networked.id().to_string())
    };
    let after = std::time::SystemTime::now();
    let boxes = dir.0.join("home/boxes");
    let format_of = |id: &str| {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(boxes.join(id).join("config.json")).unwrap()).unwrap();
        record["format"].clone()
    };
    // A box that needs nothing newer stays readable by a boxlite of format 1; one with a
    // network setting of its own is format 2, which such a boxlite refuses instead of
    // starting the box without it.
    assert_eq!(format_of(&new_id), 1);
    assert_eq!(format_of(&networked_id), 2);
    // A record as boxlite wrote it before the format and the creation time existed.
    let old_path = boxes.join(&old_id).join("config.json");
    let mut old: serde_json::Value = serde_json::from_slice(&std::fs::read(&old_path).unwrap()).unwrap();
    let fields = old.as_object_mut().unwrap();
    assert!(fields.remove("format").is_some() && fields.remove("created_at_ms").is_some(), "{old}");
    std::fs::write(&old_path, serde_json::to_vec(&old).unwrap()).unwrap();

    let rt = runtime(&dir);
    let new = rt.get_box("new").expect("the new box loads");
    // The record keeps milliseconds: compare at that grain.
    let millis = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let created = millis(new.created_at());
    assert!(
        millis(before) <= created && created <= millis(after),
        "created at {created}, between {} and {}",
        millis(before),
        millis(after)
    );
    let old = rt.get_box("old").expect("a record without a format reads as format 1");
    assert_eq!(old.created_at(), std::time::UNIX_EPOCH);
    assert!(rt.invalid_boxes().is_empty(), "{:?}", invalid(&rt));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_boxes_of_one_image_start_at_once_and_leave_nothing_when_removed() {
    let dir = RunDir::new("last-ten");
    let rt = with_image(&dir);
    let boxes: Vec<_> = (0..10)
        .map(|n| {
            rt.create_box(BoxOptions { name: Some(format!("b{n}")), image: Some(IMAGE.into()), memory_mib: 128, ..Default::default() })
                .unwrap()
        })
        .collect();
    let started = futures::future::join_all(boxes.iter().map(|b| b.start())).await;
    for result in started {
        result.unwrap();
    }
    assert_eq!(rt.images().disks_built(), 1);
    let listed = rt.list_boxes();
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|b| b.status() == BoxStatus::Running));
    let answers = futures::future::join_all(boxes.iter().map(|b| b.exec_output(ExecCommand::new("hostname")))).await;
    assert!(answers.into_iter().all(|a| a.unwrap().status.success()));
    let metrics = rt.metrics();
    assert_eq!((metrics.boxes_created, metrics.boxes_running, metrics.boots, metrics.executions), (10, 10, 10, 10));

    let shim_pids: Vec<u32> =
        boxes.iter().map(|b| std::fs::read_to_string(b.dir().join("shim.pid")).unwrap().trim().parse().unwrap()).collect();
    assert!(shim_pids.iter().all(|&p| process_alive(p)));
    let dirs: Vec<_> = boxes.iter().map(|b| b.dir().to_path_buf()).collect();
    for lite_box in &boxes {
        rt.remove_box(lite_box.id(), true).await.unwrap();
    }
    assert!(rt.list_boxes().is_empty());
    assert!(dirs.iter().all(|d| !d.exists()), "remove left files");
    assert_eq!(wait_gone(&shim_pids, Duration::from_secs(2)), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn box_metrics_and_guest_stats() {
    let dir = RunDir::new("last-metrics");
    let rt = with_image(&dir);
    let lite_box = rt.create_box(BoxOptions { image: Some(IMAGE.into()), ..Default::default() }).unwrap();
    assert!(lite_box.guest_stats().await.is_err(), "no stats from a box that is not running");
    stdout(&lite_box, "head -c 1000 /dev/zero").await;
    let metrics = lite_box.metrics();
    assert_eq!((metrics.boots, metrics.exec.started), (1, 1));
    assert!(metrics.exec.bytes_out >= 1000);
    assert!(metrics.last_boot_ms.unwrap() > 0.0);
    let stats = lite_box.guest_stats().await.unwrap();
    assert!(stats.memory_total_kib > 100_000 && stats.memory_total_kib < 300_000, "{stats:?}");
    assert!(stats.memory_available_kib < stats.memory_total_kib && stats.uptime_us > 0, "{stats:?}");
    lite_box.stop().await.unwrap();
}

/// The ones of `dirs` that exist.
fn existing(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter().filter(|d| d.exists()).cloned().collect()
}

/// The cgroups of the one box under `boxes`, as its shim recorded them; they exist now.
fn recorded_cgroups(boxes: &Path) -> Vec<PathBuf> {
    let box_dir = std::fs::read_dir(boxes).unwrap().flatten().next().expect("one box").path();
    let record = std::fs::read(box_dir.join("protections.json")).unwrap_or_else(|e| panic!("{}/protections.json: {e}", box_dir.display()));
    let cgroups = serde_json::from_slice::<boxlite::Protections>(&record).unwrap().cgroups;
    assert!(!cgroups.is_empty() && existing(&cgroups) == cgroups, "the VM's cgroups: {cgroups:?}");
    cgroups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shim_leaves_no_cgroup_behind() {
    let dir = RunDir::new("last-kill-cgroups");
    let rt = with_image(&dir);
    let victim = rt.create_box(BoxOptions { image: Some(IMAGE.into()), ..Default::default() }).unwrap();
    stdout(&victim, "true").await;
    let cgroups = recorded_cgroups(&dir.0.join("home/boxes"));
    // A runtime opening another home meanwhile leaves a running VM's cgroups alone.
    let elsewhere = RunDir::new("last-kill-cgroups-elsewhere");
    drop(runtime(&elsewhere));
    assert_eq!(existing(&cgroups), cgroups, "another runtime removed a running VM's cgroups");

    let shim_pid: u32 = std::fs::read_to_string(victim.dir().join("shim.pid")).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim_pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The library sees the shim die; its VM's processes take a moment to leave the cgroups.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !existing(&cgroups).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(existing(&cgroups), Vec::<PathBuf>::new(), "cgroups of the killed VM left 3 s after its shim was killed (of {cgroups:?})");
    assert_eq!(victim.status(), BoxStatus::Stopped);
}

/// A cgroup `boxlite/shim-<pid>` whose shim is gone (here: whose pid has exited), what a
/// SIGKILLed host process leaves, is removed by the next runtime, its child cgroup first;
/// nothing else under boxlite/ is touched.
#[test]
fn a_runtime_removes_the_cgroups_of_shims_that_no_longer_run_and_nothing_else() {
    let base =
        if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() { "/sys/fs/cgroup/boxlite" } else { "/sys/fs/cgroup/pids/boxlite" };
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = exited.id();
    exited.wait().unwrap();
    let orphan = Path::new(base).join(format!("shim-{dead_pid}"));
    let unrelated = Path::new(base).join(format!("not-a-shim-{}", std::process::id()));
    std::fs::create_dir_all(orphan.join("child")).unwrap_or_else(|e| panic!("{}: {e} (the test needs root)", orphan.display()));
    std::fs::create_dir_all(&unrelated).unwrap();

    let dir = RunDir::new("last-sweep");
    drop(runtime(&dir));
    let (orphan_left, unrelated_kept) = (orphan.exists(), unrelated.exists());
    // Cleaned up before asserting, so that a failure leaves nothing on the host.
    let _ = std::fs::remove_dir(&unrelated);
    let _ = std::fs::remove_dir(orphan.join("child")).and_then(|()| std::fs::remove_dir(&orphan));
    assert!(!orphan_left, "{} (of exited pid {dead_pid}) was left", orphan.display());
    assert!(unrelated_kept, "{} is no shim's cgroup, yet it was removed", unrelated.display());
}

#[test]
fn a_killed_host_process_takes_its_boxes_vms_with_it() {
    let dir = RunDir::new("last-orphan");
    drop(with_image(&dir)); // import the image into the home, then let the CLI use it
    let home = dir.0.join("home");
    let mut owner = std::process::Command::new(env!("CARGO_BIN_EXE_boxlite"))
        .arg("--home")
        .arg(&home)
        .args(["--engine", "qemu", "run", "--name", "orphan", "--image", IMAGE, "--", "sleep", "1000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the box's VM to be up (its shim pid file, and the box recorded as running).
    let deadline = Instant::now() + Duration::from_secs(30);
    let shim_pid = loop {
        assert!(Instant::now() < deadline, "the box never started");
        let record = std::fs::read_dir(home.join("boxes")).unwrap().flatten().next().map(|e| e.path());
        if let Some(box_dir) = record {
            let running = std::fs::read_to_string(box_dir.join("config.json")).unwrap_or_default().contains("\"running\"");
            if let (true, Ok(pid)) = (running, std::fs::read_to_string(box_dir.join("shim.pid"))) {
                let vmm: u32 = std::fs::read_to_string(box_dir.join("vmm.pid")).unwrap().trim().parse().unwrap();
                break vec![pid.trim().parse::<u32>().unwrap(), vmm];
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(shim_pid.iter().all(|&p| process_alive(p)));
    let cgroups = recorded_cgroups(&home.join("boxes"));
    owner.kill().unwrap(); // SIGKILL: no clean-up code of the owner runs
    owner.wait().unwrap();
    assert_eq!(wait_gone(&shim_pid, Duration::from_secs(2)), Vec::<u32>::new(), "the VM outlived its owner");
    // The next runtime finds the box stopped, with the reason, and removes the VM's cgroups,
    // which nobody saw end.
    let rt = runtime(&dir);
    let orphan = rt.get_box("orphan").unwrap();
    assert_eq!(orphan.status(), BoxStatus::Stopped);
    assert!(orphan.stop_reason().unwrap().contains("runtime that ran it exited"));
    assert_eq!(existing(&cgroups), Vec::<PathBuf>::new(), "cgroups of the VM left after the next runtime opened (of {cgroups:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_box_outlives_its_runtime_and_the_next_one_attaches() {
    let dir = RunDir::new("last-detached");
    // The first runtime runs on an async runtime of its own, shut down after: nothing of it
    // follows the VM any more, as if it had run in another process.
    let (id, shim_pid) = std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            tokio.block_on(async {
                let rt = with_image(&dir);
                let options = BoxOptions { name: Some("daemon".into()), image: Some(IMAGE.into()), detached: true, ..Default::default() };
                let lite_box = rt.create_box(options).unwrap();
                stdout(&lite_box, "echo 'still here' > /root/state; sync").await;
                let pid: u32 = std::fs::read_to_string(lite_box.dir().join("shim.pid")).unwrap().trim().parse().unwrap();
                (lite_box.id().to_string(), pid)
            })
        });
        first.join().unwrap()
    }); // the runtime and every handle are gone
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(process_alive(shim_pid), "a detached VM must outlive its runtime");

    let rt = runtime(&dir);
    let lite_box = rt.get_box("daemon").unwrap();
    assert_eq!((lite_box.id(), lite_box.status()), (id.as_str(), BoxStatus::Running));
    assert_eq!(stdout(&lite_box, "cat /root/state").await, "still here\n", "the next runtime attaches and execs");
    assert_eq!(
        std::fs::read_to_string(lite_box.dir().join("shim.pid")).unwrap().trim(),
        shim_pid.to_string(),
        "the same VM, not a new boot"
    );
    let cgroups = recorded_cgroups(&dir.0.join("home/boxes"));
    lite_box.stop().await.unwrap();
    assert_eq!(wait_gone(&[shim_pid], Duration::from_secs(2)), Vec::<u32>::new());
    assert_eq!(lite_box.status(), BoxStatus::Stopped);
    // The shim is not this runtime's child, yet its cgroups go when it ends.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !existing(&cgroups).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(existing(&cgroups), Vec::<PathBuf>::new(), "cgroups of the attached VM left after it stopped (of {cgroups:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bigger_disk_is_a_bigger_root_file_system() {
    let dir = RunDir::new("last-disk");
    let rt = with_image(&dir);
    let small = rt.create_box(BoxOptions { image: Some(IMAGE.into()), ..Default::default() }).unwrap();
    let big = rt.create_box(BoxOptions { image: Some(IMAGE.into()), disk_size_gib: Some(8), ..Default::default() }).unwrap();
    let size_kib = |out: String| -> u64 { out.lines().nth(1).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap() };
    let small_kib = size_kib(stdout(&small, "df -k /").await);
    let big_kib = size_kib(stdout(&big, "df -k /").await);
    assert!(small_kib < 4 << 20, "the base size is content + 2 GiB: {small_kib} KiB");
    assert!(big_kib > 7 << 20, "asked for 8 GiB, got {big_kib} KiB");
    let too_small = rt.create_box(BoxOptions { image: Some(IMAGE.into()), disk_size_gib: Some(1), ..Default::default() }).unwrap();
    let error = too_small.start().await.unwrap_err();
    assert!(matches!(error, Error::InvalidOption { field: "disk_size_gib", .. }), "{error}");
    small.stop().await.unwrap();
    big.stop().await.unwrap();
}
