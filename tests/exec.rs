//! Exec in a real VM (qemu engine) over the busybox root disk.

mod common;

use std::time::Duration;

use boxlite::{Error, ExecCommand, ExecErrorKind, Vm};
use common::{boot_busybox, RunDir};
use sha2::{Digest, Sha256};

fn sh(script: &str) -> ExecCommand {
    ExecCommand::new("sh").args(["-c", script])
}

async fn run(vm: &Vm, command: ExecCommand) -> boxlite::ExecOutput {
    let program = command.program.clone();
    vm.exec_output(command).await.unwrap_or_else(|e| panic!("exec {program}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_signals_and_separate_streams() {
    let dir = RunDir::new("exec-basics");
    let vm = boot_busybox(&dir).await;

    let echo = run(&vm, ExecCommand::new("echo").arg("hello box")).await;
    assert_eq!(echo.stdout, b"hello box\n");
    assert_eq!(echo.stderr, b"");
    assert!(echo.status.success());

    for code in [0, 1, 42] {
        let out = run(&vm, sh(&format!("exit {code}"))).await;
        assert_eq!((out.status.code, out.status.signal, out.status.timed_out), (Some(code), None, false));
    }
    let killed = run(&vm, sh("kill -9 $$")).await;
    assert_eq!((killed.status.code, killed.status.signal), (None, Some(9)));

    let both = run(&vm, sh("echo to-out; echo to-err >&2; echo more-out")).await;
    assert_eq!(both.stdout, b"to-out\nmore-out\n");
    assert_eq!(both.stderr, b"to-err\n");

    let binary = run(&vm, ExecCommand::new("printf").arg(r"\000\377\376abc\000\n\200")).await;
    assert_eq!(binary.stdout, b"\x00\xff\xfeabc\x00\n\x80");

    let metrics = vm.exec_metrics();
    assert_eq!(metrics.started, 7);
    assert_eq!(metrics.failed, 0);
    assert!(metrics.bytes_out >= 40, "{metrics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_working_dir_and_user_apply() {
    let dir = RunDir::new("exec-env");
    let vm = boot_busybox(&dir).await;

    let env = run(&vm, ExecCommand::new("env").env("GREETING", "hi there").env("PATH", "/bin")).await;
    let env = String::from_utf8(env.stdout).unwrap();
    assert!(env.lines().any(|l| l == "GREETING=hi there"), "{env}");
    assert!(env.lines().any(|l| l == "PATH=/bin"), "{env}");

    assert_eq!(run(&vm, ExecCommand::new("pwd").working_dir("/tmp")).await.stdout, b"/tmp\n");
    assert_eq!(run(&vm, ExecCommand::new("pwd")).await.stdout, b"/root\n", "root's home by default");

    let tester = run(&vm, ExecCommand::new("id").user("tester")).await;
    assert_eq!(tester.stdout, b"uid=1000(tester) gid=1000(tester) groups=1000(tester)\n");
    assert_eq!(run(&vm, ExecCommand::new("pwd").user("tester")).await.stdout, b"/home/tester\n");
    let numeric = run(&vm, ExecCommand::new("id").args(["-u"]).user("1234:55")).await;
    assert_eq!(numeric.stdout, b"1234\n");
    assert_eq!(run(&vm, ExecCommand::new("id").arg("-g").user("1234:55")).await.stdout, b"55\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_program_directory_and_user_are_distinct_errors() {
    let dir = RunDir::new("exec-errors");
    let vm = boot_busybox(&dir).await;
    let cases = [
        (ExecCommand::new("no-such-program"), ExecErrorKind::ProgramNotFound, "not found in PATH"),
        (ExecCommand::new("/bin/nothing-here"), ExecErrorKind::ProgramNotFound, "does not exist"),
        (ExecCommand::new("/etc/passwd"), ExecErrorKind::NotExecutable, "not an executable"),
        (ExecCommand::new("pwd").working_dir("/no/such/dir"), ExecErrorKind::WorkingDirNotFound, "/no/such/dir"),
        (ExecCommand::new("id").user("nobody-like-this"), ExecErrorKind::UserNotFound, "nobody-like-this"),
    ];
    for (command, expected, words) in cases {
        let program = command.program.clone();
        match vm.exec(command).await {
            Err(Error::ExecRefused { kind, message, .. }) => {
                assert_eq!(kind, expected, "{program}: {message}");
                assert!(message.contains(words), "{program}: {message:?} should mention {words:?}");
            }
            Err(other) => panic!("{program}: wrong error {other}"),
            Ok(_) => panic!("{program}: started"),
        }
    }
    assert_eq!(vm.exec_metrics().failed, 5);
    assert_eq!(vm.exec_metrics().started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trips_through_cat_and_closing_ends_it() {
    let dir = RunDir::new("exec-stdin");
    let vm = boot_busybox(&dir).await;
    let mut cat = vm.exec(ExecCommand::new("cat")).await.unwrap();
    let mut stdin = cat.take_stdin().unwrap();
    let mut stdout = cat.take_stdout().unwrap();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let reader = tokio::spawn(async move { stdout.read_to_end().await });
    stdin.write(b"first line\n").await.unwrap();
    stdin.write(&payload).await.unwrap();
    stdin.close().await.unwrap();
    let echoed = reader.await.unwrap().unwrap();
    assert_eq!(&echoed[..11], b"first line\n");
    assert!(echoed[11..] == payload[..], "cat echoed {} bytes, {} sent", echoed.len(), payload.len() + 11);
    assert!(cat.wait().await.unwrap().success());
    assert!(vm.exec_metrics().bytes_in >= payload.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_arrive_intact() {
    let dir = RunDir::new("exec-100mb");
    let vm = boot_busybox(&dir).await;
    // The guest hashes exactly what it sends (tee into a fifo read by sha256sum).
    let script = "mkfifo /tmp/hashpipe; sha256sum < /tmp/hashpipe >&2 & \
                  head -c 100000000 /dev/urandom | tee /tmp/hashpipe; wait";
    let mut execution = vm.exec(sh(script)).await.unwrap();
    let mut stdout = execution.take_stdout().unwrap();
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    while let Some(chunk) = stdout.next_chunk().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        hasher.update(&chunk);
    }
    let stderr = execution.take_stderr().unwrap().read_to_end().await.unwrap();
    assert!(execution.wait().await.unwrap().success());
    assert_eq!(received, 100_000_000);
    let guest_hash = String::from_utf8(stderr).unwrap();
    let host_hash = format!("{:x}", hasher.finalize());
    assert_eq!(guest_hash.split_whitespace().next(), Some(host_hash.as_str()), "guest said {guest_hash:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_output_that_outlasts_the_agents_linger_arrives_whole() {
    let dir = RunDir::new("exec-linger");
    let vm = boot_busybox(&dir).await;
    // exec_output's Start waits up to 2 s in the agent for the process to finish. Past that,
    // with the exit before the output's end (a background child holds stdout), or with more
    // output than one answer holds, the rest comes through ReadOutput and Wait.
    let late = run(&vm, sh("echo early; sleep 3; echo late >&2; exit 5")).await;
    assert_eq!((late.stdout.as_slice(), late.stderr.as_slice(), late.status.code), (&b"early\n"[..], &b"late\n"[..], Some(5)));
    let held = run(&vm, sh("(sleep 3; echo from-background) & echo from-foreground")).await;
    assert_eq!(String::from_utf8_lossy(&held.stdout), "from-foreground\nfrom-background\n");
    let big = run(&vm, sh("head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2")).await;
    assert_eq!(big.stdout.len(), 3_000_000);
    assert!(big.stdout.iter().all(|&b| b == b'x') && big.stderr == b"done\n");
    assert!(big.status.success() && !big.stdout_truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executions_in_one_box_and_across_two() {
    let (dir_a, dir_b) = (RunDir::new("exec-many-a"), RunDir::new("exec-many-b"));
    let (a, b) = tokio::join!(boot_busybox(&dir_a), boot_busybox(&dir_b));
    let script = |tag: &str| sh(&format!("i=0; while [ $i -lt 300 ]; do echo {tag}-$i; echo {tag}-err-$i >&2; i=$((i+1)); done"));
    let expected = |tag: &str, infix: &str| (0..300).map(|i| format!("{tag}-{infix}{i}\n")).collect::<String>();

    let mut runs = Vec::new();
    for n in 0..20 {
        runs.push((a.exec_output(script(&format!("a{n}"))), format!("a{n}")));
    }
    let outputs = futures::future::join_all(runs.into_iter().map(|(f, tag)| async move { (f.await, tag) })).await;
    for (output, tag) in outputs {
        let output = output.unwrap();
        assert_eq!(String::from_utf8(output.stdout).unwrap(), expected(&tag, ""));
        assert_eq!(String::from_utf8(output.stderr).unwrap(), expected(&tag, "err-"));
    }

    let mut across = Vec::new();
    for n in 0..5 {
        across.push((a.exec_output(script(&format!("x{n}"))), format!("x{n}")));
        across.push((b.exec_output(script(&format!("y{n}"))), format!("y{n}")));
    }
    let outputs = futures::future::join_all(across.into_iter().map(|(f, tag)| async move { (f.await, tag) })).await;
    for (output, tag) in outputs {
        let output = output.unwrap();
        assert_eq!(String::from_utf8(output.stdout).unwrap(), expected(&tag, ""));
        assert_eq!(String::from_utf8(output.stderr).unwrap(), expected(&tag, "err-"));
    }
    assert_eq!(a.exec_metrics().started, 25);
    assert_eq!(b.exec_metrics().started, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kill_and_signal_reach_the_processes() {
    let dir = RunDir::new("exec-kill");
    let vm = boot_busybox(&dir).await;

    // The timeout takes the whole process group: the shell and both sleeps.
    let started = std::time::Instant::now();
    let timed = run(&vm, sh("sleep 1000 & sleep 1000").timeout(Duration::from_secs(1))).await;
    assert!(timed.status.timed_out, "{:?}", timed.status);
    assert_eq!(timed.status.signal, Some(9));
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let ps = run(&vm, ExecCommand::new("ps")).await;
    let ps = String::from_utf8(ps.stdout).unwrap();
    assert!(!ps.contains("sleep 1000"), "the timeout left children running:\n{ps}");

    let sleeper = vm.exec(ExecCommand::new("sleep").arg("1000")).await.unwrap();
    sleeper.signal(libc::SIGTERM).await.unwrap();
    assert_eq!(sleeper.wait().await.unwrap().signal, Some(libc::SIGTERM));

    let sleeper = vm.exec(ExecCommand::new("sleep").arg("1000")).await.unwrap();
    sleeper.kill().await.unwrap();
    let status = sleeper.wait().await.unwrap();
    assert_eq!((status.signal, status.timed_out), (Some(9), false));

    // A caller that gives up on a collecting exec inside the agent's linger never learns of
    // the process: its group is killed rather than left running where nobody can reach it.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), vm.exec_output(sh("sleep 1001 & sleep 1001"))).await;
    assert!(gave_up.is_err(), "the exec should still have been lingering");
    let mut left = String::new();
    for _ in 0..50 {
        left = String::from_utf8(run(&vm, ExecCommand::new("ps")).await.stdout).unwrap();
        if !left.contains("sleep 1001") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!left.contains("sleep 1001"), "the abandoned exec is still running:\n{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_mode_gives_a_terminal_that_can_be_resized() {
    let dir = RunDir::new("exec-tty");
    let vm = boot_busybox(&dir).await;
    let tty = run(&vm, ExecCommand::new("tty").tty(24, 80)).await;
    assert!(String::from_utf8_lossy(&tty.stdout).starts_with("/dev/pts/"), "{:?}", tty.stdout);
    let not_tty = run(&vm, ExecCommand::new("tty")).await;
    assert_eq!(not_tty.status.code, Some(1), "without a tty, `tty` says so");

    let mut shell = vm.exec(ExecCommand::new("sh").tty(24, 80)).await.unwrap();
    let mut stdin = shell.take_stdin().unwrap();
    let mut stdout = shell.take_stdout().unwrap();
    let mut seen = String::new();
    async fn read_until(stdout: &mut boxlite::OutputStream, seen: &mut String, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.contains(needle) {
            let chunk = tokio::time::timeout_at(deadline, stdout.next_chunk()).await;
            match chunk {
                Ok(Some(Ok(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                other => panic!("waiting for {needle:?}: {other:?}; output so far: {seen:?}"),
            }
        }
    }
    stdin.write(b"stty size\n").await.unwrap();
    read_until(&mut stdout, &mut seen, "24 80").await;
    shell.resize(30, 100).await.unwrap();
    stdin.write(b"stty size\n").await.unwrap();
    read_until(&mut stdout, &mut seen, "30 100").await;
    stdin.write(b"exit 3\n").await.unwrap();
    assert_eq!(shell.wait().await.unwrap().code, Some(3));
}
