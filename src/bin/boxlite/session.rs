//! A process in a box wired to this process's stdio, as `docker run`/`exec` do: its output
//! streamed here, stdin forwarded with -i, and with -t a terminal in the box sized as ours
//! (SIGWINCH forwarded as a resize) while ours is raw. Without a terminal, SIGINT, SIGTERM
//! and SIGHUP sent to boxlite are passed on to the process (docker's sig-proxy).

use std::io::{Read, Write};

use boxlite::{ExecCommand, ExecStatus, Execution, LiteBox};
use tokio::signal::unix::{signal, SignalKind};

use crate::args::ProcessFlags;
use crate::terminal::{window_size, RawMode};

/// The command a `run` or `exec` asks for, with -e, -w, -u and -t applied.
pub fn command(argv: &[String], flags: &ProcessFlags) -> boxlite::Result<ExecCommand> {
    let mut command = match argv.split_first() {
        Some((program, args)) => ExecCommand::new(program.clone()).args(args.iter().cloned()),
        None => ExecCommand::default(), // the image's Entrypoint/Cmd
    };
    let env = flags.env_pairs()?;
    if flags.tty && !env.iter().any(|(name, _)| name == "TERM") {
        // As docker: a terminal in the box gets a TERM, the caller's if it has one.
        let term = std::env::var("TERM").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| "xterm".into());
        command = command.env("TERM", term);
    }
    for (name, value) in env {
        command = command.env(name, value);
    }
    if let Some(dir) = &flags.workdir {
        command = command.working_dir(dir.clone());
    }
    if let Some(user) = &flags.user {
        command = command.user(user.clone());
    }
    if flags.tty {
        let (rows, cols) = window_size();
        command = command.tty(rows, cols);
    }
    Ok(command)
}

/// Starts `command` in the box and runs it to its end wired to this terminal; returns how
/// it ended.
pub async fn run(lite_box: &LiteBox, command: ExecCommand, interactive: bool) -> boxlite::Result<ExecStatus> {
    let tty = command.tty.is_some();
    // Raw before the process starts: keys typed meanwhile are the process's too.
    let raw = if tty && interactive { RawMode::enable() } else { None };
    let mut execution = lite_box.exec(command).await?;
    let status = pump(&mut execution, interactive, tty).await;
    drop(raw);
    status
}

async fn pump(execution: &mut Execution, interactive: bool, tty: bool) -> boxlite::Result<ExecStatus> {
    let (mut out, mut err) = (execution.take_stdout(), execution.take_stderr());
    let stdin = execution.take_stdin();
    let stdin = if interactive { stdin } else { None }; // dropped: the process reads EOF
    let copy_out = async {
        let Some(out) = out.as_mut() else { return Ok(()) };
        while let Some(chunk) = out.next_chunk().await {
            let chunk = chunk?;
            let mut stdout = std::io::stdout().lock();
            // A closed stdout here (e.g. `| head`) must not stop the process's other streams.
            let _ = stdout.write_all(&chunk).and_then(|()| stdout.flush());
        }
        Ok::<_, boxlite::Error>(())
    };
    let copy_err = async {
        let Some(err) = err.as_mut() else { return Ok(()) };
        while let Some(chunk) = err.next_chunk().await {
            let _ = std::io::stderr().write_all(&chunk?);
        }
        Ok::<_, boxlite::Error>(())
    };
    let execution: &Execution = execution;
    let control = control(execution, stdin, tty);
    let finished = async {
        let (a, b) = tokio::join!(copy_out, copy_err);
        a?;
        b?;
        execution.wait().await
    };
    tokio::select! {
        status = finished => status,
        // `control` ends only on an error; then the process is killed, not left behind.
        Err(e) = control => {
            let _ = execution.kill().await;
            Err(e)
        }
    }
}

/// Forwards stdin, window size changes and signals until the process ends (the caller
/// drops this future then). Returns only on an error.
async fn control(execution: &Execution, mut stdin: Option<boxlite::StdinWriter>, tty: bool) -> boxlite::Result<()> {
    let mut input = stdin.is_some().then(read_stdin);
    let mut winch = signal(SignalKind::window_change()).ok();
    // In raw mode Ctrl-C is a byte; signals from elsewhere still reach the process.
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut hangup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            biased;
            Some(()) = recv_signal(&mut winch), if tty => {
                let (rows, cols) = window_size();
                execution.resize(rows, cols).await?;
            }
            Some(()) = recv_signal(&mut interrupt) => execution.signal(libc::SIGINT).await?,
            Some(()) = recv_signal(&mut terminate) => execution.signal(libc::SIGTERM).await?,
            Some(()) = recv_signal(&mut hangup) => execution.signal(libc::SIGHUP).await?,
            chunk = next_input(&mut input) => match chunk {
                Some(bytes) => {
                    if let Some(writer) = stdin.as_mut() {
                        writer.write(&bytes).await?;
                    }
                }
                None => {
                    input = None;
                    if let Some(writer) = stdin.take() {
                        writer.close().await?;
                    }
                }
            },
        }
    }
}

pub async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_input(input: &mut Option<tokio::sync::mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match input {
        Some(input) => input.recv().await,
        None => std::future::pending().await,
    }
}

/// This process's stdin, read on a thread of its own: a blocking read that nothing waits
/// for when boxlite exits (tokio's stdin would hold the runtime's shutdown).
fn read_stdin() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    });
    receiver
}

/// A process's end as an exit code: its own, or 128 + the signal that killed it.
pub fn exit_code(status: &ExecStatus) -> i32 {
    status.code.unwrap_or_else(|| 128 + status.signal.unwrap_or(0))
}
