//! Copies into and out of boxes (real VMs, the busybox image): a ~50 MB tree with symlinks,
//! a setuid file and an empty directory comes back identical; a box tree holding symlinks
//! to `/` and `../../..` copies out as those symlinks and nothing lands or is read outside
//! the destination; host memory stays bounded during a 1 GiB copy each way; errors name
//! the path. The busybox test image comes from scripts/build-test-images.sh.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use boxlite::runtime::error::CopyErrorKind;
use boxlite::{BoxOptions, BoxliteRuntime, EngineChoice, Error, ExecCommand, LiteBox, RuntimeOptions};
use common::RunDir;
use sha2::{Digest, Sha256};

const IMAGE: &str = "localhost/boxlite/busybox:latest";

/// The tests here measure host memory: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn runtime(dir: &RunDir) -> BoxliteRuntime {
    let rt =
        BoxliteRuntime::new(RuntimeOptions { home: Some(dir.0.join("home")), engine: EngineChoice::Qemu, ..Default::default() }).unwrap();
    let layout = boxlite::runtime::helpers::cache_dir().join("test-images/busybox");
    assert!(layout.join("index.json").is_file(), "{} is missing: run scripts/build-test-images.sh", layout.display());
    rt.images().import_layout(&layout, Some("latest"), IMAGE).unwrap();
    rt
}

fn image_box(rt: &BoxliteRuntime, disk_gib: Option<u32>) -> LiteBox {
    rt.create_box(BoxOptions { image: Some(IMAGE.into()), disk_size_gib: disk_gib, ..Default::default() }).unwrap()
}

async fn sh(lite_box: &LiteBox, script: &str) -> String {
    let out = lite_box.exec_output(ExecCommand::new("sh").args(["-c", script])).await.unwrap();
    assert!(out.status.success(), "{script}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Paths, types, modes, owners, mtimes (not of symlinks), link targets and content hashes.
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                format!("dir mtime {}", meta.mtime())
            } else {
                format!("{:x} mtime {}", Sha256::digest(std::fs::read(&path).unwrap()), meta.mtime())
            };
            let mode = if meta.file_type().is_symlink() { 0 } else { meta.permissions().mode() & 0o7777 };
            out.push(format!("{rel} {mode:o} {}:{} {what}", meta.uid(), meta.gid()));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Deterministic bytes that do not compress away.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn set_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).or_else(|_| std::fs::File::open(path)).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

/// ~50 MB: 48 files of 1 MiB in two directories, a setuid program, a private file, a
/// read-only directory, an empty directory, and symlinks (relative, absolute, dangling, to a
/// directory).
fn make_tree(root: &Path) -> u64 {
    let mut bytes = 0;
    for dir in ["data/a", "data/b"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for n in 0..48u64 {
        let path = root.join(if n % 2 == 0 { "data/a" } else { "data/b" }).join(format!("f{n}"));
        let content = noise(n, 1 << 20);
        bytes += content.len() as u64;
        std::fs::write(&path, content).unwrap();
        set_mtime(&path, 1_600_000_000 + n);
    }
    std::fs::write(root.join("suid"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(root.join("private"), b"secret\n").unwrap();
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    std::fs::create_dir(root.join("readonly")).unwrap();
    std::fs::write(root.join("readonly/inside"), b"in a read-only dir\n").unwrap();
    std::os::unix::fs::symlink("data/a/f0", root.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("data", root.join("dirlink")).unwrap();
    for dir in ["data/a", "data/b", "data", "empty", "readonly/inside"] {
        set_mtime(&root.join(dir), 1_500_000_000);
    }
    std::fs::set_permissions(root.join("readonly"), std::fs::Permissions::from_mode(0o555)).unwrap();
    set_mtime(&root.join("readonly"), 1_500_000_000);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_copies_in_and_out_with_its_modes_symlinks_and_empty_dirs() {
    let _serial = SERIAL.lock().await;
    let dir = RunDir::new("copy-tree");
    let src = dir.0.join("tree");
    let bytes = make_tree(&src);
    let rt = runtime(&dir);
    let lite_box = image_box(&rt, None);
    lite_box.start().await.unwrap();

    // Into an existing directory: the tree goes inside it, under its own name.
    let started = Instant::now();
    let report = lite_box.copy_in(&src, "/srv").await.unwrap();
    let took = started.elapsed();
    eprintln!("copy in: {:.1} MB in {took:?} = {:.1} MB/s", bytes as f64 / 1e6, bytes as f64 / 1e6 / took.as_secs_f64());
    assert!(report.entries >= 57, "{report:?}");
    assert!(report.bytes > bytes, "{report:?}");
    let seen = sh(&lite_box, "cd /srv/tree && stat -c '%n %a %u' suid private empty readonly && for l in rel abs dangling dirlink; do readlink $l; done && ls -A empty | wc -l && sha256sum data/b/f47").await;
    let want_hash = format!("{:x}", Sha256::digest(noise(47, 1 << 20)));
    assert_eq!(
        seen,
        format!(
            "suid 4755 0\nprivate 600 0\nempty 755 0\nreadonly 555 0\ndata/a/f0\n/etc/passwd\nnowhere\ndata\n0\n{want_hash}  data/b/f47\n"
        ),
        "the box sees the tree as it was on the host"
    );

    // Out to a new name: the copy becomes it, identical.
    let back = dir.0.join("back");
    let started = Instant::now();
    let report = lite_box.copy_out("/srv/tree", &back).await.unwrap();
    let took = started.elapsed();
    eprintln!("copy out: {:.1} MB in {took:?} = {:.1} MB/s", bytes as f64 / 1e6, bytes as f64 / 1e6 / took.as_secs_f64());
    assert!(report.entries >= 57, "{report:?}");
    assert_eq!(listing(&back), listing(&src), "the round trip changed the tree");

    // One file out into an existing directory, and one file in onto a new name.
    let existing = dir.0.join("existing");
    std::fs::create_dir(&existing).unwrap();
    lite_box.copy_out("/srv/tree/suid", &existing).await.unwrap();
    let meta = std::fs::symlink_metadata(existing.join("suid")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
    lite_box.copy_out("/srv/tree/abs", &existing.join("abs-copy")).await.unwrap();
    assert_eq!(std::fs::read_link(existing.join("abs-copy")).unwrap(), Path::new("/etc/passwd"), "a symlink comes out as a symlink");
    lite_box.copy_in(&src.join("private"), "/srv/renamed").await.unwrap();
    assert_eq!(sh(&lite_box, "stat -c '%a' /srv/renamed; cat /srv/renamed").await, "600\nsecret\n");

    // Errors name the path and the cause.
    let missing = lite_box.copy_out("/srv/no-such-thing", &existing).await.unwrap_err();
    assert!(matches!(missing, Error::Copy { kind: CopyErrorKind::NotFound, .. }), "{missing}");
    assert!(missing.to_string().contains("/srv/no-such-thing"), "{missing}");
    let no_parent = lite_box.copy_in(&src.join("private"), "/no/such/dir/x").await.unwrap_err();
    assert!(matches!(no_parent, Error::Copy { kind: CopyErrorKind::NotFound, .. }), "{no_parent}");
    assert!(no_parent.to_string().contains("/no/such/dir"), "{no_parent}");
    let onto_file = lite_box.copy_in(&src, "/srv/renamed").await.unwrap_err();
    assert!(matches!(onto_file, Error::Copy { kind: CopyErrorKind::Invalid, .. }), "{onto_file}");
    let host_missing = lite_box.copy_in(&dir.0.join("nothing-here"), "/srv").await.unwrap_err();
    assert!(host_missing.to_string().contains("nothing-here"), "{host_missing}");

    // A stopped box is started for the copy (and left running).
    lite_box.stop().await.unwrap();
    let again = dir.0.join("again");
    lite_box.copy_out("/srv/tree/private", &again).await.unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), b"secret\n");
    assert_eq!(lite_box.status(), boxlite::BoxStatus::Running);
    lite_box.stop().await.unwrap();
    // The read-only directory would stop the RunDir's cleanup.
    for tree in [&src, &back] {
        std::fs::set_permissions(tree.join("readonly"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_a_box_tree_are_copied_as_symlinks_and_never_followed() {
    let _serial = SERIAL.lock().await;
    let dir = RunDir::new("copy-hostile");
    let rt = runtime(&dir);
    let lite_box = image_box(&rt, None);
    sh(
        &lite_box,
        "set -e; mkdir -p /srv/evil/sub; cd /srv/evil; ln -s / root; ln -s ../../.. up; ln -s /etc etc; ln -s ../../../../etc/passwd sub/pw; \
         echo plain > plain; echo inside > .wh.plain; echo in-the-box > /etc/boxlite-marker",
    )
    .await;
    let host = dir.0.join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("bait"), b"host file\n").unwrap();
    let before = listing(&dir.0.join("host"));

    lite_box.copy_out("/srv/evil", &host.join("out")).await.unwrap();
    let out = host.join("out");
    let got = listing(&out);
    let names: Vec<&str> = got.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names, vec![".wh.plain", "etc", "plain", "root", "sub", "sub/pw", "up"], "{got:#?}");
    assert_eq!(std::fs::read_link(out.join("root")).unwrap(), Path::new("/"));
    assert_eq!(std::fs::read_link(out.join("up")).unwrap(), Path::new("../../.."));
    assert_eq!(std::fs::read_link(out.join("sub/pw")).unwrap(), Path::new("../../../../etc/passwd"));
    assert_eq!(std::fs::read(out.join(".wh.plain")).unwrap(), b"inside\n", "a .wh. name is a plain file, not a whiteout");
    assert_eq!(std::fs::read(out.join("plain")).unwrap(), b"plain\n");
    // Nothing else changed next to the destination.
    let after: Vec<String> = listing(&host).into_iter().filter(|l| !l.starts_with("out")).collect();
    assert_eq!(after, before, "something was written outside the destination");

    // Copying out through the symlinks reads inside the box's root only: `root` is the
    // box's own /, `up` stops at it.
    let through = dir.0.join("through");
    lite_box.copy_out("/srv/evil/up/etc/boxlite-marker", &through).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read_to_string(&through).unwrap(), "in-the-box\n", "the box's /etc, not the host's");
    let via_root = dir.0.join("via-root");
    lite_box.copy_out("/srv/evil/root/etc/boxlite-marker", &via_root).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read_to_string(&via_root).unwrap(), "in-the-box\n");
    // Copying in through them writes inside the box's root only.
    lite_box.copy_in(&host.join("bait"), "/srv/evil/up/tmp/").await.unwrap();
    assert_eq!(sh(&lite_box, "cat /tmp/bait").await, "host file\n");
    lite_box.stop().await.unwrap();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_memory_stays_bounded_while_a_gigabyte_is_copied_each_way() {
    let _serial = SERIAL.lock().await;
    const SIZE: u64 = 1 << 30;
    const MAX_GROWTH_KIB: u64 = 200 << 10;
    let dir = RunDir::new("copy-rss");
    let big = dir.0.join("big");
    std::fs::create_dir(&big).unwrap();
    // Real data (a sparse file would read as zeros just the same, but page in nothing).
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(big.join("blob")).unwrap());
        for n in 0..(SIZE >> 20) {
            file.write_all(&noise(n, 1 << 20)).unwrap();
        }
    }
    let rt = runtime(&dir);
    let lite_box = image_box(&rt, Some(4));
    lite_box.start().await.unwrap();

    let baseline = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    lite_box.copy_in(&big.join("blob"), "/root/blob").await.unwrap();
    let copy_in = started.elapsed();
    let back = dir.0.join("blob-back");
    let started = Instant::now();
    lite_box.copy_out("/root/blob", &back).await.unwrap();
    let copy_out = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(baseline);
    let mb = SIZE as f64 / 1e6;
    eprintln!(
        "1 GiB: copy in {copy_in:?} ({:.1} MB/s), copy out {copy_out:?} ({:.1} MB/s); host RSS {baseline} KiB at start, peak growth {growth} KiB",
        mb / copy_in.as_secs_f64(),
        mb / copy_out.as_secs_f64()
    );
    assert_eq!(std::fs::metadata(&back).unwrap().len(), SIZE);
    let (mut a, mut b) = (std::fs::File::open(big.join("blob")).unwrap(), std::fs::File::open(&back).unwrap());
    let (ha, hb) = (sha_of(&mut a), sha_of(&mut b));
    assert_eq!(ha, hb, "the gigabyte came back changed");
    assert!(growth < MAX_GROWTH_KIB, "host RSS grew by {growth} KiB during a 1 GiB copy (bound {MAX_GROWTH_KIB} KiB)");
    lite_box.stop().await.unwrap();
}

fn sha_of(file: &mut std::fs::File) -> String {
    let mut hasher = Sha256::new();
    std::io::copy(file, &mut hasher).unwrap();
    format!("{:x}", hasher.finalize())
}
