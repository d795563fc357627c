//! An agent that answers every long poll at once with "nothing yet" (the real ttrpc
//! Execution service, served in this process). The host must back off and give up, not ask
//! again at once forever on the runtime's shared workers; and a healthy box beside it keeps
//! its exec latency. Then a scripted agent for the lingering Start of collected output: one
//! round trip when it saw everything, ReadOutput and Wait after it when it did not, and an
//! answer with more output than asked for refused.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxlite::runtime::agent::AgentClient;
use boxlite::{Error, ExecCommand, Execution};
use boxlite_protocol::agent::{
    exec_error::Kind as WireErrorKind, ExecError, OutputStream as WireStream, ReadOutputRequest, ReadOutputResponse, ReleaseRequest,
    ReleaseResponse, SignalRequest, SignalResponse, StartRequest, StartResponse, WaitRequest, WaitResponse, WriteStdinRequest,
    WriteStdinResponse,
};
use boxlite_protocol::agent_ttrpc::{create_execution, Execution as ExecutionService};
use ttrpc::asynchronous::{Server, TtrpcContext};

/// Starts every process, then answers each ReadOutput with no data and no end, and each
/// Wait with "not exited", at once.
#[derive(Default)]
struct Impatient {
    read_outputs: AtomicU64,
    waits: AtomicU64,
    started: AtomicU64,
}

#[async_trait::async_trait]
impl ExecutionService for Impatient {
    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        Ok(StartResponse { exec_id: req.exec_id, pid: 100 + n as u32, ..Default::default() })
    }

    async fn read_output(&self, _ctx: &TtrpcContext, _req: ReadOutputRequest) -> ttrpc::Result<ReadOutputResponse> {
        self.read_outputs.fetch_add(1, Ordering::Relaxed);
        Ok(ReadOutputResponse::default())
    }

    async fn write_stdin(&self, _ctx: &TtrpcContext, _req: WriteStdinRequest) -> ttrpc::Result<WriteStdinResponse> {
        Ok(WriteStdinResponse::default())
    }

    async fn wait(&self, _ctx: &TtrpcContext, _req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.waits.fetch_add(1, Ordering::Relaxed);
        Ok(WaitResponse::default())
    }

    async fn signal(&self, _ctx: &TtrpcContext, _req: SignalRequest) -> ttrpc::Result<SignalResponse> {
        Ok(SignalResponse::default())
    }

    async fn release(&self, _ctx: &TtrpcContext, _req: ReleaseRequest) -> ttrpc::Result<ReleaseResponse> {
        Ok(ReleaseResponse::default())
    }
}

/// Serves `agent` on a fresh unix socket; the server stops when dropped.
async fn serve(agent: Arc<Impatient>, name: &str) -> (Server, PathBuf) {
    let socket = std::env::temp_dir().join(format!("boxlite-impatient-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let mut server = Server::new().bind(&format!("unix://{}", socket.display())).unwrap().register_service(create_execution(agent));
    server.start().await.unwrap();
    (server, socket)
}

async fn hostile_execution(socket: &PathBuf) -> Execution {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    Execution::start_unsupervised(AgentClient::over(stream), ExecCommand::new("anything")).await.unwrap()
}

fn assert_gave_up(what: &str, result: boxlite::Result<impl std::fmt::Debug>) {
    match result {
        Err(Error::GuestProtocol { what: why }) => {
            assert!(why.contains("in a row"), "{what}: {why}");
            eprintln!("{what}: {why}");
        }
        other => panic!("{what}: expected a GuestProtocol error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_answers_nothing_at_once_is_backed_off_from_and_given_up_on() {
    let agent = Arc::new(Impatient::default());
    let (_server, socket) = serve(agent.clone(), "give-up").await;
    let mut execution = hostile_execution(&socket).await;
    let (mut stdout, mut stderr) = (execution.take_stdout().unwrap(), execution.take_stderr().unwrap());

    let started = Instant::now();
    // A host that asks again at once passes any bound on the requests quickly; one that backs
    // off and gives up stays under 150.
    let spinning = async {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let asked = agent.read_outputs.load(Ordering::Relaxed) + agent.waits.load(Ordering::Relaxed);
            if asked > 1000 {
                return asked;
            }
        }
    };
    let (status, out, err) = tokio::select! {
        results = async { tokio::join!(execution.wait(), stdout.read_to_end(), stderr.read_to_end()) } => results,
        asked = spinning => panic!("the host keeps asking: {asked} requests and counting"),
    };
    let took = started.elapsed();
    let (read_outputs, waits) = (agent.read_outputs.load(Ordering::Relaxed), agent.waits.load(Ordering::Relaxed));
    let _ = std::fs::remove_file(&socket);
    eprintln!("gave up after {took:?}: {read_outputs} ReadOutput and {waits} Wait requests");
    assert_gave_up("wait", status);
    assert_gave_up("stdout", out);
    assert_gave_up("stderr", err);
    // A host that asked again at once would have sent hundreds of thousands in that time.
    assert!(read_outputs <= 2 * 50, "{read_outputs} ReadOutput requests for two streams");
    assert!(waits <= 50, "{waits} Wait requests");
    // The pauses between early replies: 10 ms doubling, the first seven alone 1.27 s.
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}, without backing off");
}

/// The median of `n` round trips of `true` in `vm`.
async fn median_exec(vm: &boxlite::Vm, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let out = vm.exec_output(ExecCommand::new("true")).await.unwrap();
        times.push(started.elapsed());
        assert!(out.status.success());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_box_keeps_its_exec_latency_beside_hostile_agents() {
    let dir = common::RunDir::new("hostile-neighbours");
    let vm = common::boot_busybox(&dir).await;
    median_exec(&vm, 3).await; // warm-up
    let idle = median_exec(&vm, 10).await;

    let agent = Arc::new(Impatient::default());
    let (_server, socket) = serve(agent.clone(), "neighbours").await;
    let mut hostile = Vec::new();
    for _ in 0..4 {
        let execution = hostile_execution(&socket).await;
        hostile.push(tokio::spawn(async move { execution.output().await }));
    }
    let beside = median_exec(&vm, 10).await;
    let requests = agent.read_outputs.load(Ordering::Relaxed) + agent.waits.load(Ordering::Relaxed);
    for task in hostile {
        if task.is_finished() {
            panic!("a hostile execution ended early (the measurement ran without it): {:?}", task.await.unwrap().map(|_| ()));
        }
        task.abort();
    }
    let _ = std::fs::remove_file(&socket);
    eprintln!("exec `true` median: idle {idle:?}, beside 4 hostile executions {beside:?} (they sent {requests} requests meanwhile)");
    // Each of the 12 polls (3 per execution) gives up after 50 early replies, whatever the time.
    assert!(requests <= 4 * 3 * 50, "the hostile executions got {requests} answers: the host re-asks without backing off");
    let bound = idle * 2 + Duration::from_millis(20);
    assert!(beside < bound, "exec median {beside:?} beside hostile agents, {idle:?} idle (bound {bound:?})");
}

/// Answers with messages of a mebibyte: a refusal to start anything but "ok", and a failed
/// ReadOutput whose ttrpc status carries the text.
struct Wordy;

const WORDY: usize = 1 << 20;

#[async_trait::async_trait]
impl ExecutionService for Wordy {
    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        if req.program == "ok" {
            return Ok(StartResponse { exec_id: req.exec_id, pid: 7, ..Default::default() });
        }
        let error = ExecError { kind: WireErrorKind::SPAWN_FAILED.into(), message: "why ".repeat(WORDY / 4), ..Default::default() };
        Ok(StartResponse { error: Some(error).into(), ..Default::default() })
    }

    async fn read_output(&self, _ctx: &TtrpcContext, _req: ReadOutputRequest) -> ttrpc::Result<ReadOutputResponse> {
        Err(ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::INTERNAL, "e".repeat(WORDY))))
    }
}

#[tokio::test]
async fn an_agents_long_messages_are_quoted_at_a_bounded_length() {
    let socket = std::env::temp_dir().join(format!("boxlite-wordy-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let mut server =
        Server::new().bind(&format!("unix://{}", socket.display())).unwrap().register_service(create_execution(Arc::new(Wordy)));
    server.start().await.unwrap();
    let agent = AgentClient::over(tokio::net::UnixStream::connect(&socket).await.unwrap());

    let refused = Execution::start_unsupervised(agent.clone(), ExecCommand::new("refused")).await.err().expect("a refusal");
    let text = refused.to_string();
    assert!(matches!(refused, Error::ExecRefused { .. }), "{text}");
    assert!(text.len() < 2048 && text.contains(&format!("({WORDY} bytes)")), "{} bytes: {}", text.len(), &text[..text.len().min(200)]);

    let mut execution = Execution::start_unsupervised(agent, ExecCommand::new("ok")).await.unwrap();
    let failed = execution.take_stdout().unwrap().read_to_end().await.expect_err("ReadOutput fails");
    let text = failed.to_string();
    let _ = std::fs::remove_file(&socket);
    assert!(matches!(failed, Error::Agent { rpc: "ReadOutput", .. }), "{}", &text[..text.len().min(200)]);
    assert!(text.len() < 2048 && text.contains("bytes)"), "{} bytes: {}", text.len(), &text[..text.len().min(200)]);
}

/// Answers Start with `start` (a lingering Start's answer) after `start_delay`, with the exec
/// id asked for unless `start` names one; then stdout's `more_stdout` and its end, stderr's
/// end and `exit_code`. Records the Start request and the Releases and counts the rest.
#[derive(Default)]
struct Scripted {
    start: StartResponse,
    start_delay: Duration,
    more_stdout: Vec<u8>,
    exit_code: i32,
    asked: Mutex<Option<StartRequest>>,
    served_stdout: std::sync::atomic::AtomicBool,
    later_calls: AtomicU64,
    releases: Mutex<Vec<ReleaseRequest>>,
}

impl Scripted {
    fn release_count(&self) -> usize {
        self.releases.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl ExecutionService for Scripted {
    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let mut response = self.start.clone();
        if response.exec_id.is_empty() {
            response.exec_id = req.exec_id.clone();
        }
        *self.asked.lock().unwrap() = Some(req);
        tokio::time::sleep(self.start_delay).await;
        Ok(response)
    }

    async fn read_output(&self, _ctx: &TtrpcContext, req: ReadOutputRequest) -> ttrpc::Result<ReadOutputResponse> {
        self.later_calls.fetch_add(1, Ordering::Relaxed);
        let stdout = req.stream.enum_value() == Ok(WireStream::STDOUT);
        if stdout && !self.more_stdout.is_empty() && !self.served_stdout.swap(true, Ordering::Relaxed) {
            return Ok(ReadOutputResponse { data: self.more_stdout.clone(), ..Default::default() });
        }
        Ok(ReadOutputResponse { eof: true, ..Default::default() })
    }

    async fn write_stdin(&self, _ctx: &TtrpcContext, _req: WriteStdinRequest) -> ttrpc::Result<WriteStdinResponse> {
        self.later_calls.fetch_add(1, Ordering::Relaxed);
        Ok(WriteStdinResponse::default())
    }

    async fn wait(&self, _ctx: &TtrpcContext, _req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.later_calls.fetch_add(1, Ordering::Relaxed);
        Ok(WaitResponse { exited: true, exit_code: self.exit_code, ..Default::default() })
    }

    async fn release(&self, _ctx: &TtrpcContext, req: ReleaseRequest) -> ttrpc::Result<ReleaseResponse> {
        self.releases.lock().unwrap().push(req);
        Ok(ReleaseResponse::default())
    }
}

/// Collects the output of a process started through `agent`, keeping at most 10 bytes per
/// stream; and the agent, once a Release the host may have sent has had time to arrive.
async fn collect_through(agent: Scripted, name: &str) -> (boxlite::Result<boxlite::ExecOutput>, Arc<Scripted>) {
    match collect_within(agent, name, Duration::from_secs(60)).await {
        Ok(collected) => collected,
        Err(_agent) => panic!("not collected in 60 s"),
    }
}

/// `collect_through`, given up after `limit` (then `Err`, with the agent).
async fn collect_within(
    agent: Scripted,
    name: &str,
    limit: Duration,
) -> Result<(boxlite::Result<boxlite::ExecOutput>, Arc<Scripted>), Arc<Scripted>> {
    let agent = Arc::new(agent);
    let socket = std::env::temp_dir().join(format!("boxlite-scripted-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let mut server = Server::new().bind(&format!("unix://{}", socket.display())).unwrap().register_service(create_execution(agent.clone()));
    server.start().await.unwrap();
    let client = AgentClient::over(tokio::net::UnixStream::connect(&socket).await.unwrap());
    let command = ExecCommand::new("anything").output_limit(10).no_stdin();
    let collected = tokio::time::timeout(limit, async {
        match Execution::start_unsupervised(client, command).await {
            Ok(execution) => execution.output().await,
            Err(e) => Err(e),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::fs::remove_file(&socket);
    match collected {
        Ok(output) => Ok((output, agent)),
        Err(_elapsed) => Err(agent),
    }
}

fn lingered(stdout: &[u8], stdout_eof: bool, exit: Option<i32>) -> StartResponse {
    StartResponse {
        pid: 9,
        stdout: stdout.to_vec(),
        stderr: b"err".to_vec(),
        stdout_eof,
        stderr_eof: true,
        exit: exit.map(|exit_code| WaitResponse { exited: true, exit_code, ..Default::default() }).into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_collecting_start_that_saw_everything_is_the_only_round_trip() {
    let agent = Scripted { start: lingered(b"out", true, Some(3)), ..Default::default() };
    let (output, agent) = collect_through(agent, "everything").await;
    let output = output.unwrap();
    assert_eq!((output.stdout.as_slice(), output.stderr.as_slice(), output.status.code), (&b"out"[..], &b"err"[..], Some(3)));
    let asked = agent.asked.lock().unwrap().clone().unwrap();
    assert!(asked.close_stdin && asked.linger_ms > 0, "{asked:?}");
    assert_eq!(asked.linger_max_bytes, 11, "one byte past the output limit, to see an overflow");
    assert_eq!(agent.later_calls.load(Ordering::Relaxed), 0, "no ReadOutput, WriteStdin or Wait after a complete Start");
    assert_eq!(agent.release_count(), 0, "the agent dropped its record already");
}

#[tokio::test]
async fn a_collecting_start_cut_short_goes_on_with_read_output_and_wait() {
    let agent = Scripted { start: lingered(b"ab", false, None), more_stdout: b"cd".to_vec(), exit_code: 0, ..Default::default() };
    let (output, agent) = collect_through(agent, "cut-short").await;
    let output = output.unwrap();
    assert_eq!((output.stdout.as_slice(), output.stderr.as_slice(), output.status.code), (&b"abcd"[..], &b"err"[..], Some(0)));
    // Two ReadOutputs of stdout (its rest, then its end) and a Wait; stderr had ended.
    assert_eq!(agent.later_calls.load(Ordering::Relaxed), 3);
    let releases = agent.releases.lock().unwrap().clone();
    assert_eq!(releases.len(), 1, "the execution goes on in the agent: the host releases it");
    assert!(!releases[0].kill, "a plain Release: the caller had the execution");
}

#[tokio::test]
async fn a_collecting_start_that_answers_more_than_asked_is_refused() {
    let agent = Scripted { start: lingered(b"twelve bytes", true, Some(0)), ..Default::default() };
    let (output, agent) = collect_through(agent, "too-much").await;
    match output {
        Err(Error::GuestProtocol { what }) => assert!(what.contains("more than the 11"), "{what}"),
        other => panic!("expected a GuestProtocol error, got {:?}", other.map(|o| o.stdout)),
    }
    assert_kill_released(&agent, "a refused answer");
}

/// The host released the execution its Start named, with `kill`, and only that.
fn assert_kill_released(agent: &Scripted, after: &str) {
    let asked = agent.asked.lock().unwrap().clone().expect("a Start");
    let releases = agent.releases.lock().unwrap().clone();
    assert_eq!(releases.len(), 1, "after {after}: {releases:?}");
    assert!(releases[0].kill && releases[0].exec_id == asked.exec_id, "after {after}: {releases:?} for {:?}", asked.exec_id);
}

#[tokio::test]
async fn a_start_given_up_on_is_released_with_kill() {
    // The agent answers after 2 s; the caller gives up after 100 ms.
    let agent = Scripted { start: lingered(b"", true, Some(0)), start_delay: Duration::from_secs(2), ..Default::default() };
    let agent = collect_within(agent, "given-up", Duration::from_millis(100)).await.err().expect("the caller gave up");
    assert_kill_released(&agent, "a cancelled Start");
    let asked = agent.asked.lock().unwrap().clone().unwrap();
    assert!(boxlite_protocol::valid_exec_id(&asked.exec_id) && asked.exec_id.len() >= 16, "the host names it: {:?}", asked.exec_id);
}

#[tokio::test]
async fn a_start_that_answers_another_exec_id_is_refused_and_released() {
    let agent = Scripted { start: StartResponse { exec_id: "not-yours".into(), ..lingered(b"", false, None) }, ..Default::default() };
    let (output, agent) = collect_through(agent, "other-id").await;
    match output {
        Err(Error::GuestProtocol { what }) => assert!(what.contains("not-yours") && what.contains("asked for"), "{what}"),
        other => panic!("expected a GuestProtocol error, got {:?}", other.map(|o| o.stdout)),
    }
    assert_kill_released(&agent, "an answer for another id");
}
