//! The `boxlite` command line itself, driven as a user drives it: real VMs (qemu) from the
//! busybox test image (scripts/build-test-images.sh), each test on a home of its own. On
//! failure a test prints its boxes' shim and console logs and the home's boxlite.log.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{wait_gone, RunDir};

const IMAGE: &str = "localhost/busybox";
/// Generous bounds for a command of the CLI (a boot under TCG on a busy machine, a disk
/// build): waits end early when the awaited thing happens; these only stop a hung test.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);
const OUTPUT_LIMIT: Duration = Duration::from_secs(60);

fn busybox_layout() -> PathBuf {
    let path = boxlite::runtime::helpers::cache_dir().join("test-images/busybox");
    assert!(path.join("index.json").is_file(), "{} is missing: run scripts/build-test-images.sh (scripts/test.sh does)", path.display());
    path
}

/// A home with the busybox image imported; prints the boxes' logs if the test fails.
struct Home {
    dir: RunDir,
}

impl Home {
    fn new(name: &str) -> Home {
        let home = Home { dir: RunDir::new(&format!("cli-{name}")) };
        let out = home.run(&["import", busybox_layout().to_str().unwrap(), IMAGE]);
        assert_eq!(out.code, 0, "import: {}", out.stderr);
        home
    }

    fn path(&self) -> PathBuf {
        self.dir.0.join("home")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_boxlite"));
        command.arg("--home").arg(self.path()).args(["--engine", "qemu"]).args(args);
        command
    }

    /// Runs the CLI to its end (bounded) with no stdin.
    fn run(&self, args: &[&str]) -> Output {
        let child = self.command(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        collect(child, args)
    }

    fn box_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.path().join("boxes")) else { return Vec::new() };
        entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
    }

    /// `ps -a --format json`, parsed.
    fn boxes(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["ps", "-a", "--format", "json"]);
        assert_eq!(out.code, 0, "ps: {}", out.stderr);
        serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| panic!("ps printed {:?}: {e}", out.stdout))
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Detached boxes outlive the CLI: a failed test must not leave their VMs running
        // (their VMM and helpers die with the shim).
        for dir in self.box_dirs() {
            let Some(pid) = std::fs::read_to_string(dir.join("shim.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok()) else { continue };
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "boxlite-shim") {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        if !std::thread::panicking() {
            return;
        }
        for dir in self.box_dirs() {
            for log in ["shim.log", "vmm/console.log"] {
                let text = std::fs::read_to_string(dir.join(log)).unwrap_or_else(|e| format!("({e})"));
                eprintln!("---- {} ----\n{}", dir.join(log).display(), tail(&text, 60));
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.path().join("logs")) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                eprintln!("---- {} ----\n{}", entry.path().display(), tail(&text, 60));
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Waits for a child within COMMAND_LIMIT; kills it and fails the test past that.
fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("boxlite {what} did not end within {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn collect(mut child: Child, args: &[&str]) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_bounded(&mut child, &args.join(" "));
    Output { code: code_of(status), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().parse().unwrap()
}

/// The shim's and the VMM's pids of a running box.
fn vm_pids(box_dir: &Path) -> Vec<u32> {
    vec![read_pid(&box_dir.join("shim.pid")), read_pid(&box_dir.join("vmm.pid"))]
}

#[test]
fn run_rm_leaves_nothing_behind_and_exit_codes_pass_through() {
    let home = Home::new("rm");
    // -i: the command waits for a line on stdin, so the test sees the box while it runs.
    let mut child = home
        .command(&["run", "--rm", "-i", IMAGE, "sh", "-c", "echo ready; read line; echo \"got $line\"; exit 42"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).unwrap_or_else(|e| {
        let _ = child.kill();
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        panic!("no output from the box ({e}); boxlite said: {stderr}")
    });
    assert_eq!(&first, b"ready\n");
    let dirs = home.box_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let pids = vm_pids(&dirs[0]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"x\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = wait_bounded(&mut child, "run --rm -i");
    assert_eq!(code_of(status), 42, "the command's exit code");
    assert_eq!(rest, "got x\n");
    assert_eq!(home.box_dirs(), Vec::<PathBuf>::new(), "run --rm left a box directory");
    assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<u32>::new(), "run --rm left VM processes");
    assert_eq!(home.boxes(), Vec::<serde_json::Value>::new());

    // A command killed by a signal: 128 + its number; one that does not exist: 127.
    let killed = home.run(&["run", "--rm", IMAGE, "sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.code, 137, "{}", killed.stderr);
    let missing = home.run(&["run", "--rm", IMAGE, "no-such-program"]);
    assert_eq!(missing.code, 127, "{}", missing.stderr);
    assert_eq!(missing.stderr.trim().lines().count(), 1, "{:?}", missing.stderr);
    assert!(missing.stderr.contains("no-such-program"), "{}", missing.stderr);
    // Stdout and stderr stay apart; -e, -w and -u reach the process.
    let flags = home.run(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hello",
        "-w",
        "/tmp",
        "-u",
        "tester",
        IMAGE,
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -un); echo oops >&2",
    ]);
    assert_eq!((flags.code, flags.stdout.as_str()), (0, "hello /tmp tester\n"), "{}", flags.stderr);
    assert_eq!(flags.stderr, "oops\n");
    assert_eq!(home.box_dirs(), Vec::<PathBuf>::new());
}

#[test]
fn sigint_to_run_stops_the_box_and_exits_130() {
    let home = Home::new("sigint");
    let mut child =
        home.command(&["run", "--name", "sig", IMAGE, "sleep", "1000"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Once the shim runs, SIGINT lands either in the boot (which then ends and the box is
    // stopped again) or in the command (forwarded: sleep dies of it): either way 130, and a
    // stopped box with no VM left.
    let started = Instant::now();
    let box_dir = loop {
        if let Some(dir) = home.box_dirs().into_iter().find(|d| d.join("shim.pid").is_file()) {
            break dir;
        }
        if started.elapsed() > COMMAND_LIMIT || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the box's shim never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let shim = read_pid(&box_dir.join("shim.pid"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(code_of(wait_bounded(&mut child, "run (interrupted)")), 130, "{stderr}");
    let mut pids = vec![shim];
    pids.extend(std::fs::read_to_string(box_dir.join("vmm.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok()));
    assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<u32>::new(), "an interrupted run left VM processes");
    assert_eq!(home.boxes()[0]["status"], "stopped");
}

#[test]
fn bad_input_gives_one_line_and_the_code_of_its_class() {
    let home = Home::new("errors");
    let cases: [(&[&str], i32, &str); 8] = [
        (&["run", "--bogus", IMAGE], 64, "--bogus"),
        (&["run", "--memory", "lots", IMAGE], 64, "is not a size"),
        (&["run", "--rm", "Not An Image!"], 64, "not an image reference"),
        // Not cached, and its registry refuses: a registry error, with the way out.
        (&["run", "--rm", "127.0.0.1:1/nope:latest"], 76, "boxlite import"),
        (&["exec", "nobox", "true"], 66, "\"nobox\" does not exist"),
        (&["stop", "nobox"], 66, "boxlite ps -a"),
        (&["rmi", "localhost/nothing:here"], 66, "localhost/nothing:here"),
        (&["run", "-d", IMAGE, "sleep", "1"], 64, "boxlite exec"),
    ];
    for (args, code, says) in cases {
        let out = home.run(args);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?} printed more than one line: {:?}", out.stderr);
        assert!(lines[0].starts_with("boxlite: ") && lines[0].contains(says), "{args:?}: {}", lines[0]);
        assert_eq!(out.stdout, "", "{args:?}");
    }
    assert_eq!(home.box_dirs(), Vec::<PathBuf>::new(), "a failed command left a box");
    // A created box that is not running: exec says how to start it (a state error).
    let created = home.run(&["create", "--name", "idle", IMAGE]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let out = home.run(&["exec", "idle", "true"]);
    assert_eq!(out.code, 67, "{}", out.stderr);
    assert!(out.stderr.contains("boxlite start idle") && out.stderr.lines().count() == 1, "{}", out.stderr);
    let taken = home.run(&["run", "--name", "idle", IMAGE, "true"]);
    assert_eq!(taken.code, 67, "{}", taken.stderr);
    // The home held by another boxlite: its own code.
    let mut holder = home
        .command(&["run", "--rm", "-i", IMAGE, "sh", "-c", "echo up; read x; exit 0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = [0u8; 3];
    holder.stdout.take().unwrap().read_exact(&mut up).unwrap();
    let busy = home.run(&["ps"]);
    drop(holder.stdin.take());
    assert_eq!(code_of(wait_bounded(&mut holder, "run --rm -i")), 0);
    assert_eq!(busy.code, 75, "{}", busy.stderr);
    assert!(busy.stderr.contains("in use by another boxlite runtime"), "{}", busy.stderr);
}

#[test]
fn a_detached_box_keeps_its_files_across_stop_and_start() {
    let home = Home::new("detached");
    let started = home.run(&["run", "-d", "--name", "keep", "--memory", "256m", IMAGE]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let id = started.stdout.trim().to_string();
    assert_eq!(id.len(), 12, "run -d prints the box's id: {:?}", started.stdout);
    let listed = home.boxes();
    assert_eq!((listed[0]["id"].as_str(), listed[0]["status"].as_str()), (Some(id.as_str()), Some("running")), "{listed:?}");
    let pids = vm_pids(&home.box_dirs()[0]);

    let write = home.run(&["exec", "keep", "sh", "-c", "echo kept > /root/file && sync"]);
    assert_eq!(write.code, 0, "{}", write.stderr);
    let code = home.run(&["exec", "keep", "sh", "-c", "exit 3"]);
    assert_eq!(code.code, 3, "exec passes the exit code through: {}", code.stderr);
    let stopped = home.run(&["stop", "keep"]);
    assert_eq!((stopped.code, stopped.stdout.as_str()), (0, "keep\n"), "{}", stopped.stderr);
    assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<u32>::new(), "stop left VM processes");
    assert_eq!(home.boxes()[0]["status"], "stopped");
    assert_eq!(home.run(&["ps"]).stdout.lines().count(), 1, "ps without -a lists running boxes only (and its header)");

    let restarted = home.run(&["start", "keep"]);
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    let read = home.run(&["exec", "keep", "cat", "/root/file"]);
    assert_eq!((read.code, read.stdout.as_str()), (0, "kept\n"), "{}", read.stderr);
    let boot_id = home.run(&["exec", "keep", "cat", "/proc/sys/kernel/random/boot_id"]).stdout;
    let restarted = home.run(&["restart", "keep"]);
    assert_eq!((restarted.code, restarted.stdout.as_str()), (0, "keep\n"), "{}", restarted.stderr);
    let after = home.run(&["exec", "keep", "sh", "-c", "cat /root/file /proc/sys/kernel/random/boot_id"]);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert!(after.stdout.starts_with("kept\n") && !after.stdout.ends_with(&boot_id), "restart boots anew, files kept: {}", after.stdout);

    let inspected = home.run(&["inspect", "keep"]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    let document: serde_json::Value = serde_json::from_str(&inspected.stdout).unwrap();
    let document = &document[0];
    assert_eq!((document["id"].as_str(), document["status"].as_str()), (Some(id.as_str()), Some("running")));
    assert_eq!(document["options"]["memory_mib"], 256);
    assert!(document["disk"]["overlay"]["allocated_bytes"].as_u64().unwrap() > 0, "{document}");
    assert!(document["running"]["guest"]["memory_total_kib"].as_u64().unwrap() > 0, "{document}");
    assert!(!document["protections"]["namespaces"].as_array().unwrap().is_empty(), "{document}");
    let logs = home.run(&["logs", "keep"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.contains("console.log <==") && logs.stdout.contains("shim.log <=="), "{}", logs.stdout);
    assert!(logs.stdout.contains("boxlite-shim: pid"), "{}", logs.stdout);

    let pids = vm_pids(&home.box_dirs()[0]);
    let refused = home.run(&["rm", "keep"]);
    assert_eq!(refused.code, 67, "rm refuses a running box: {}", refused.stderr);
    // `logs -f` follows without holding the home (rm -f can run), and ends with the VM.
    let mut follower = home.command(&["logs", "-f", "keep"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut followed = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut header = String::new();
    std::io::BufRead::read_line(&mut followed, &mut header).unwrap();
    assert!(header.starts_with("==> ") && header.ends_with("console.log <==\n"), "{header:?}");
    let removed = home.run(&["rm", "-f", "keep"]);
    assert_eq!((removed.code, removed.stdout.as_str()), (0, "keep\n"), "{}", removed.stderr);
    assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<u32>::new(), "rm -f left VM processes");
    assert_eq!(home.box_dirs(), Vec::<PathBuf>::new());
    let mut rest = String::new();
    followed.read_to_string(&mut rest).unwrap();
    assert_eq!(code_of(wait_bounded(&mut follower, "logs -f")), 0, "{rest}");
    assert!(rest.contains("shim.log <=="), "{rest}");
}

/// A pseudo-terminal's master side, read on a thread; `expect` waits (bounded) for text.
struct Terminal {
    master: OwnedFd,
    output: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Terminal {
    fn send(&self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).unwrap();
    }

    /// Reads until `text` has appeared since the last match; whether it did within `limit`.
    fn wait_for(&mut self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.seen.find(text) {
                self.seen.drain(..at + text.len());
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => return false,
            }
        }
    }

    fn expect(&mut self, text: &str) {
        assert!(self.wait_for(text, OUTPUT_LIMIT), "{text:?} never appeared on the terminal; it showed {:?}", self.seen);
    }

    fn set_size(&self, rows: u16, cols: u16) {
        let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize from the struct we pass, alive across the
        // call; the master descriptor is open for as long as `self` lives.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }
}

#[test]
fn run_it_is_an_interactive_shell_on_a_terminal() {
    use nix::sys::termios::{tcgetattr, LocalFlags};

    let home = Home::new("tty");
    let size = libc::winsize { ws_row: 30, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let before = tcgetattr(&pty.slave).unwrap();
    let mut command = home.command(&["run", "--rm", "-it", IMAGE, "sh"]);
    command
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap())
        .env("TERM", "xterm");
    // SAFETY: between fork and exec the child only makes two async-signal-safe system calls
    // (setsid, ioctl) on descriptors it owns; nothing is allocated and no lock is taken.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            // A session of its own, with the pty (its stdin) as its controlling terminal, as a
            // login shell has: SIGWINCH then reaches it when the window size changes.
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let reader = pty.master.try_clone().unwrap();
    let (sender, output) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = nix::unistd::read(reader.as_raw_fd(), &mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut terminal = Terminal { master: pty.master, output, seen: String::new() };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        terminal.expect("# "); // the shell's prompt (root)
                               // The box's terminal started at the size of ours.
        terminal.send(b"stty size\r");
        terminal.expect("30 100");
        terminal.send(b"echo $((6 * 7))\r");
        terminal.expect("42");

        // Resized: the kernel sends SIGWINCH to the terminal's foreground group (boxlite).
        // The resize races the typed line, so ask until the new size shows (bounded).
        terminal.set_size(40, 120);
        let mut resized = false;
        for _ in 0..20 {
            terminal.send(b"stty size\r");
            if terminal.wait_for("40 120", Duration::from_secs(3)) {
                resized = true;
                break;
            }
        }
        assert!(resized, "the box never saw the new window size; the terminal showed {:?}", terminal.seen);

        // Ctrl-C is a byte to the box's terminal: the sleep gets SIGINT, the shell survives.
        terminal.send(b"echo sl''eeping; sleep 1000\r");
        terminal.expect("sleeping\r\n");
        std::thread::sleep(Duration::from_millis(500)); // let the shell fork the sleep
        terminal.send(&[0x03]);
        terminal.send(b"echo rc=$?\r");
        terminal.expect("rc=130");
        terminal.send(b"echo al''ive\r");
        terminal.expect("alive");
        terminal.send(b"exit 7\r");
    }));
    if let Err(panic) = result {
        let _ = child.kill();
        let _ = child.wait();
        std::panic::resume_unwind(panic);
    }
    let status = wait_bounded(&mut child, "run -it");
    assert_eq!(code_of(status), 7, "the shell's exit code passes through; the terminal showed {:?}", terminal.seen);
    // The terminal is as boxlite found it: raw mode undone.
    let after = tcgetattr(&pty.slave).unwrap();
    assert!(after.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG), "{:?}", after.local_flags);
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(home.box_dirs(), Vec::<PathBuf>::new());
}

#[test]
fn images_are_pulled_listed_run_and_removed() {
    let home = Home::new("images");
    let registry = common::registry::Registry::start(&home.dir.0, false);
    let reference = registry.push(&busybox_layout(), "latest", "boxlite/busybox:latest", false);
    let insecure = ["--insecure-registry", registry.address.as_str()];
    let with = |args: &[&str]| -> Vec<String> { insecure.iter().chain(args).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| home.run(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // `run` pulls an image it does not have, then runs it.
    let out = run(with(&["run", "--rm", &reference, "cat", "/etc/os-release"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("boxlite busybox"), "{}", out.stdout);
    let pulled = run(with(&["pull", &reference]));
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    assert!(pulled.stdout.starts_with(&format!("{reference} sha256:")), "{}", pulled.stdout);
    let missing = run(with(&["pull", &format!("{}/boxlite/none:latest", registry.address)]));
    assert_eq!(missing.code, 66, "a registry without that image: {}", missing.stderr);
    assert_eq!(missing.stderr.lines().count(), 1, "{}", missing.stderr);

    // An archive imports as a layout does; a path that is neither is a clear error.
    let archive = home.dir.0.join("busybox.tar");
    assert!(Command::new("tar").arg("-C").arg(busybox_layout()).arg("-cf").arg(&archive).arg(".").status().unwrap().success());
    let imported = home.run(&["import", archive.to_str().unwrap(), "localhost/from-tar"]);
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    assert_eq!(home.run(&["rmi", "localhost/from-tar"]).code, 0);
    let nowhere = home.run(&["import", "/nonexistent/layout", "localhost/x"]);
    assert_eq!(nowhere.code, 66, "{}", nowhere.stderr);
    assert!(nowhere.stderr.contains("OCI layout directory or an archive"), "{}", nowhere.stderr);

    let listed = home.run(&["images", "--format", "json"]);
    let images: Vec<serde_json::Value> = serde_json::from_str(&listed.stdout).unwrap();
    let references: Vec<&str> = images.iter().filter_map(|i| i["reference"].as_str()).collect();
    assert!(references.contains(&reference.as_str()) && references.contains(&"localhost/busybox:latest"), "{references:?}");

    // An image a box uses is kept unless forced.
    assert_eq!(home.run(&["create", "--name", "user", &reference]).code, 0);
    let refused = home.run(&["rmi", &reference]);
    assert_eq!(refused.code, 67, "{}", refused.stderr);
    assert_eq!(home.run(&["rm", "user"]).code, 0);
    let removed = home.run(&["rmi", &reference, "localhost/busybox"]);
    assert_eq!((removed.code, removed.stdout.lines().count()), (0, 2), "{}", removed.stderr);
    assert_eq!(home.run(&["images", "--format", "json"]).stdout.trim(), "[]");
    let disks = std::fs::read_dir(home.path().join("images/disks")).unwrap().count();
    assert_eq!(disks, 0, "rmi left the images' disks");
}

#[test]
fn completion_and_version_print() {
    let dir = RunDir::new("cli-completion");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_boxlite")).args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("boxlite") && script.contains("inspect"), "{shell}: {script}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_boxlite")).arg("--home").arg(&dir.0).arg("version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with(&format!("boxlite {}\n", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("engine: "), "{text}");
}
