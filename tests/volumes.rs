//! Volumes (docs/volumes.md): host directories shared into a box with virtio-fs, on real
//! VMs (qemu engine, busybox root). A read-write volume carries files both ways; a read-only
//! one refuses writes on the host side, even after the guest remounts it read-write; bad
//! volumes are refused at create; virtiofsd runs jailed and dies with the box.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use boxlite::{BoxOptions, BoxliteRuntime, EngineChoice, ExecCommand, RuntimeOptions, Vm, Volume};
use common::{busybox_root, wait_gone, RunDir};

/// The owner the read-write test gives its shared directory: not root and not the VM's uid,
/// so that a file landing on the host as this uid shows the server ran as the owner.
const OWNER: u32 = 4242;

async fn boot_with(dir: &RunDir, volumes: Vec<Volume>) -> Vm {
    let mut options = dir.options(EngineChoice::Qemu);
    options.root_disk = Some(busybox_root());
    options.volumes = volumes;
    match Vm::boot(options).await {
        Ok(vm) => vm,
        Err(e) => panic!("boot failed: {e}"),
    }
}

/// Runs a shell script in the box: (exit code, stdout, stderr).
async fn sh(vm: &Vm, script: &str) -> (i32, String, String) {
    let out = vm.exec_output(ExecCommand::new("sh").args(["-c", script])).await.expect("exec sh");
    let code = out.status.code.unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn console(vm: &Vm) -> String {
    std::fs::read_to_string(vm.spec().console_log()).unwrap_or_default()
}

fn shim_log(vm: &Vm) -> String {
    std::fs::read_to_string(vm.spec().shim_log()).unwrap_or_default()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_volume_carries_files_both_ways() {
    let dir = RunDir::new("vol-rw");
    // Outside the run directory: a volume may not overlap the VM's own files.
    let host = RunDir::new("vol-rw-host");
    let shared = host.0.clone();
    std::fs::write(shared.join("from-host.txt"), "written on the host\n").unwrap();
    if is_root() {
        for path in [shared.clone(), shared.join("from-host.txt")] {
            std::os::unix::fs::chown(&path, Some(OWNER), Some(OWNER)).unwrap();
        }
    }
    // Nested under the box's /tmp (a tmpfs): the agent creates the mount point.
    let vm = boot_with(&dir, vec![Volume::new(&shared, "/tmp/share/data", false)]).await;
    let logs = || format!("console:\n{}\nshim log:\n{}", console(&vm), shim_log(&vm));

    let (code, out, err) = sh(&vm, "cat /tmp/share/data/from-host.txt").await;
    assert_eq!((code, out.as_str()), (0, "written on the host\n"), "the host's file in the box: {err}\n{}", logs());

    let (code, _, err) =
        sh(&vm, "echo written in the box > /tmp/share/data/from-box.txt && mkdir /tmp/share/data/sub && echo deep > /tmp/share/data/sub/f")
            .await;
    assert_eq!(code, 0, "writing in the box: {err}\n{}", logs());
    assert_eq!(std::fs::read_to_string(shared.join("from-box.txt")).unwrap(), "written in the box\n");
    assert_eq!(std::fs::read_to_string(shared.join("sub/f")).unwrap(), "deep\n");
    if is_root() {
        // The server runs as the directory's owner, so what the box writes is the owner's.
        for path in ["from-box.txt", "sub", "sub/f"] {
            let meta = std::fs::metadata(shared.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (OWNER, OWNER), "{path} on the host");
        }
        // ...and the owner shows as root in the box.
        let (_, out, _) = sh(&vm, "stat -c %u:%g /tmp/share/data/from-host.txt").await;
        assert_eq!(out.trim(), "0:0");
    }

    // A symlink in the share is resolved by the box, inside the box: one to a host file
    // (absolute, or up through `..`) does not read the host's file.
    let secret = host.0.with_extension("secret");
    std::fs::write(&secret, "HOST-SECRET\n").unwrap();
    std::os::unix::fs::symlink(&secret, shared.join("escape-abs")).unwrap();
    let up = format!("../{}", secret.file_name().unwrap().to_string_lossy());
    std::os::unix::fs::symlink(&up, shared.join("escape-up")).unwrap();
    let (_, out, _) = sh(&vm, "cat /tmp/share/data/escape-abs /tmp/share/data/escape-up /tmp/share/data/../escape-up; true").await;
    assert!(!out.contains("HOST-SECRET"), "a symlink in the share read a host file: {out}");
    std::fs::remove_file(&secret).unwrap();

    // A file the host writes while the box runs appears in the box too.
    std::fs::write(shared.join("later.txt"), "later\n").unwrap();
    let (code, out, err) = sh(&vm, "cat /tmp/share/data/later.txt").await;
    assert_eq!((code, out.as_str()), (0, "later\n"), "{err}");
    // Renames and removals in the box reach the host.
    let (code, _, err) = sh(&vm, "mv /tmp/share/data/later.txt /tmp/share/data/moved.txt && rm /tmp/share/data/sub/f").await;
    assert_eq!(code, 0, "{err}");
    assert!(!shared.join("later.txt").exists() && shared.join("moved.txt").is_file() && !shared.join("sub/f").exists());
    // Modes, symlinks, hard links, times and sizes set in the box are the host file's.
    let script = "cd /tmp/share/data && echo m > mode && chmod 640 mode && ln -s moved.txt link && ln mode hard \
                  && touch -d '2001-02-03 04:05:06' mode && truncate -s 3 from-box.txt";
    let (code, _, err) = sh(&vm, script).await;
    assert_eq!(code, 0, "{err}");
    let mode = std::fs::metadata(shared.join("mode")).unwrap();
    assert_eq!(mode.mode() & 0o7777, 0o640);
    assert_eq!(mode.nlink(), 2, "the hard link");
    assert!((981_100_000..981_300_000).contains(&mode.mtime()), "mtime {}", mode.mtime());
    assert_eq!(std::fs::read_link(shared.join("link")).unwrap(), Path::new("moved.txt"));
    assert_eq!(std::fs::read(shared.join("from-box.txt")).unwrap(), b"wri");
    let (code, out, err) = sh(&vm, "ls -l /tmp/share/data").await;
    assert_eq!(code, 0, "{err}");
    for name in ["from-host.txt", "from-box.txt", "moved.txt", "sub", "hard", "link -> moved.txt"] {
        assert!(out.contains(name), "{name} missing from the box's listing:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_volume_refuses_writes_even_after_a_remount() {
    let dir = RunDir::new("vol-ro");
    // Outside the run directory: a volume may not overlap the VM's own files.
    let host = RunDir::new("vol-ro-host");
    let shared = host.0.clone();
    std::fs::write(shared.join("keep.txt"), "original\n").unwrap();
    // An existing directory of the read-only busybox root.
    let vm = boot_with(&dir, vec![Volume::new(&shared, "/home/tester", true)]).await;
    let logs = || format!("console:\n{}\nshim log:\n{}", console(&vm), shim_log(&vm));

    let (code, out, err) = sh(&vm, "cat /home/tester/keep.txt").await;
    assert_eq!((code, out.as_str()), (0, "original\n"), "reading a read-only volume: {err}\n{}", logs());
    let writes = ["echo changed > /home/tester/keep.txt", "touch /home/tester/new.txt", "rm /home/tester/keep.txt", "mkdir /home/tester/d"];
    for write in writes {
        let (code, _, _) = sh(&vm, write).await;
        assert_ne!(code, 0, "{write:?} succeeded on a read-only volume");
    }
    // Root in the box lifts the guest's own read-only flag; the host still refuses.
    let (code, _, err) = sh(&vm, "mount -o remount,rw /home/tester && grep ' /home/tester ' /proc/mounts").await;
    assert_eq!(code, 0, "the remount itself is the guest's business: {err}");
    for write in writes {
        let (code, _, _) = sh(&vm, write).await;
        assert_ne!(code, 0, "{write:?} succeeded on a read-only volume after remount,rw");
    }
    assert_eq!(std::fs::read_to_string(shared.join("keep.txt")).unwrap(), "original\n");
    let names: Vec<String> = std::fs::read_dir(&shared).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["keep.txt"], "the box wrote into a read-only volume");
}

#[test]
fn bad_volumes_are_refused_at_create() {
    let dir = RunDir::new("vol-bad");
    let home = dir.0.join("home");
    let rt = BoxliteRuntime::new(RuntimeOptions { home: Some(home.clone()), engine: EngineChoice::Qemu, ..Default::default() }).unwrap();
    std::fs::write(dir.0.join("a-file"), "x").unwrap();
    std::fs::create_dir(dir.0.join("ok")).unwrap();
    let create = |volume: Volume| {
        let options = BoxOptions { root_disk: Some(busybox_root()), volumes: vec![volume], ..Default::default() };
        rt.create_box(options).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let missing = create(Volume::new(dir.0.join("missing"), "/data", false));
    assert!(missing.contains("missing") && missing.contains("No such file"), "{missing}");
    let file = create(Volume::new(dir.0.join("a-file"), "/data", false));
    assert!(file.contains("not a directory"), "{file}");
    // The runtime's home, a directory inside it, and one that contains it.
    for host in [home.clone(), home.join("boxes"), dir.0.clone()] {
        let overlap = create(Volume::new(&host, "/data", false));
        assert!(overlap.contains("boxlite's own files"), "{}: {overlap}", host.display());
    }
    assert!(create(Volume::new(dir.0.join("ok"), "/", false)).contains("root"));
    assert!(create(Volume::new(dir.0.join("ok"), "relative", false)).contains("absolute"));
    // A good one is accepted, and refused nothing.
    assert_eq!(create(Volume::new(dir.0.join("ok"), "/data", true)), "");
    assert_eq!(rt.list_boxes().len(), 1, "a refused box was created anyway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtiofsd_is_jailed_and_dies_with_the_box() {
    let dir = RunDir::new("vol-jail");
    // Outside the run directory: a volume may not overlap the VM's own files.
    let host = RunDir::new("vol-jail-host");
    let shared = host.0.clone();
    if is_root() {
        std::os::unix::fs::chown(&shared, Some(OWNER), Some(OWNER)).unwrap();
    }
    let vm = boot_with(&dir, vec![Volume::new(&shared, "/tmp/v", false)]).await;
    let record = std::fs::read(vm.spec().protections_file()).expect("protections.json");
    let protections: boxlite::Protections = serde_json::from_slice(&record).unwrap();
    assert!(protections.seccomp.iter().any(|p| p == "virtiofsd"), "{protections:?}");
    // helper pids: vhost-device-vsock, then the volumes' servers.
    let server = vm.helper_pids()[1];
    let comm = std::fs::read_to_string(format!("/proc/{server}/comm")).unwrap();
    assert_eq!(comm.trim(), "virtiofsd");
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or_default().split_whitespace().nth(1).unwrap_or_default();
    assert_eq!(field("Seccomp:"), "2", "virtiofsd runs without its seccomp filter:\n{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000000000", "{status}");
    assert_eq!(field("CapBnd:"), "0000000000000000", "{status}");
    if is_root() {
        assert_eq!(field("Uid:"), OWNER.to_string(), "virtiofsd runs as the shared directory's owner");
        assert_eq!(protections.share_server_uids, vec![OWNER]);
    }
    // Its own mount namespace (for its /proc), and the box's pid namespace.
    let ns = |pid: u32, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    assert_ne!(ns(server, "mnt"), ns(std::process::id(), "mnt"));
    assert_eq!(ns(server, "pid"), ns(vm.vmm_pid(), "pid"));
    // It sees the jail, not the host: no /home, /etc of its own beyond ld.so.cache.
    let root = Path::new("/proc").join(server.to_string()).join("root");
    assert!(root.join(shared.strip_prefix("/").unwrap()).is_dir());
    assert!(!root.join("home").exists() || is_empty(&root.join("home")), "the host's /home is in virtiofsd's view");

    // kill -9 of the shim takes virtiofsd with it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(vm.shim_pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let alive = wait_gone(&[server], Duration::from_secs(10));
    assert!(alive.is_empty(), "virtiofsd outlived its shim");
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// A volume whose mount point cannot be made (the busybox root disk is read-only and has no
/// /mnt/missing) fails the boot with the guest's reason, instead of a box that silently
/// shows the image's files where the host's were asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_that_cannot_be_mounted_fails_the_boot_with_its_reason() {
    let dir = RunDir::new("vol-unmountable");
    let share = RunDir::new("vol-unmountable-share");
    let shared = share.0.clone();
    let mut options = dir.options(EngineChoice::Qemu);
    options.root_disk = Some(busybox_root());
    options.volumes = vec![Volume::new(&shared, "/mnt/missing", false)];
    let error = match Vm::boot(options).await {
        Ok(_) => panic!("a box booted without the volume it was given"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("cannot mount a volume") && error.contains("/mnt/missing"), "{error}");
}
