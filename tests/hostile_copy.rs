//! Copies out of a hostile box: a fake Files service (the real ttrpc service, served in this
//! process) sends what no honest agent sends. Nothing may be written outside the host
//! destination, and every broken reply must end the copy with an error naming it: a chunk
//! over the bound, entries climbing out, a stream cut short, a stream that goes on after
//! its archive, an error with a huge message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use boxlite::runtime::agent::AgentClient;
use boxlite::runtime::error::CopyErrorKind;
use boxlite::runtime::files::copy_out_unsupervised;
use boxlite::Error;
use boxlite_protocol::agent::{
    copy_error::Kind, CopyError, CopyOutOpenRequest, CopyOutOpenResponse, CopyOutReadRequest, CopyOutReadResponse,
};
use boxlite_protocol::agent_ttrpc::{create_files, Files};
use boxlite_protocol::MAX_COPY_CHUNK;
use ttrpc::asynchronous::{Server, TtrpcContext};

/// Answers CopyOutOpen with a directory, then each CopyOutRead with the next of `replies`,
/// then with the end of the stream.
struct Liar {
    replies: Mutex<Vec<CopyOutReadResponse>>,
}

#[async_trait::async_trait]
impl Files for Liar {
    async fn copy_out_open(&self, _ctx: &TtrpcContext, _req: CopyOutOpenRequest) -> ttrpc::Result<CopyOutOpenResponse> {
        Ok(CopyOutOpenResponse { copy_id: "liar-1".into(), is_dir: true, ..Default::default() })
    }

    async fn copy_out_read(&self, _ctx: &TtrpcContext, _req: CopyOutReadRequest) -> ttrpc::Result<CopyOutReadResponse> {
        let mut replies = self.replies.lock().unwrap();
        if replies.is_empty() {
            return Ok(CopyOutReadResponse { eof: true, ..Default::default() });
        }
        Ok(replies.remove(0))
    }
}

fn data(bytes: Vec<u8>) -> CopyOutReadResponse {
    CopyOutReadResponse { data: bytes, ..Default::default() }
}

/// A raw tar entry: path and link target as they are (no sanitising).
fn entry(out: &mut Vec<u8>, path: &[u8], kind: tar::EntryType, link: &[u8], content: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path);
        gnu.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

struct Setup {
    dir: PathBuf,
    _server: Server,
    agent: AgentClient,
}

/// A scratch directory with a sentinel beside the destination, and a client of `replies`.
async fn setup(name: &str, replies: Vec<CopyOutReadResponse>) -> Setup {
    let dir = std::env::temp_dir().join(format!("boxlite-hostile-copy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("beside")).unwrap();
    std::fs::write(dir.join("beside/sentinel"), b"keep").unwrap();
    let socket = dir.join("agent.sock");
    let liar = Arc::new(Liar { replies: Mutex::new(replies) });
    let mut server = Server::new().bind(&format!("unix://{}", socket.display())).unwrap().register_service(create_files(liar));
    server.start().await.unwrap();
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    Setup { dir, _server: server, agent: AgentClient::over(stream) }
}

/// Everything in `dir` but the destination and the socket: only the sentinel.
fn assert_nothing_beside(dir: &Path, case: &str) {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names.retain(|n| n != "dest" && n != "agent.sock");
    assert_eq!(names, vec!["beside"], "{case}: something was written next to the destination");
    let beside: Vec<_> = std::fs::read_dir(dir.join("beside")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside.len(), 1, "{case}: something was written beside the destination");
    assert_eq!(std::fs::read(dir.join("beside/sentinel")).unwrap(), b"keep", "{case}");
}

#[tokio::test]
async fn writes_through_the_boxs_symlinks_stay_inside_the_destination() {
    use tar::EntryType as T;
    let mut stream = Vec::new();
    entry(&mut stream, b"./", T::Directory, b"", b"");
    entry(&mut stream, b"root", T::Symlink, b"/", b"");
    entry(&mut stream, b"root/etc-pwned", T::Regular, b"", b"x");
    entry(&mut stream, b"up", T::Symlink, b"../../..", b"");
    entry(&mut stream, b"up/beside/pwned", T::Regular, b"", b"y");
    end(&mut stream);
    let s = setup("through", vec![data(stream)]).await;
    let dest = s.dir.join("dest");
    copy_out_unsupervised(s.agent.clone(), "/evil", &dest).await.unwrap();
    // Followed inside the destination, as the box itself would see them.
    assert_eq!(std::fs::read(dest.join("etc-pwned")).unwrap(), b"x");
    assert_eq!(std::fs::read(dest.join("beside/pwned")).unwrap(), b"y");
    assert_eq!(std::fs::read_link(dest.join("root")).unwrap(), Path::new("/"));
    assert_nothing_beside(&s.dir, "through symlinks");
    assert!(!Path::new("/etc-pwned").exists());
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[tokio::test]
async fn entries_climbing_out_or_linking_out_are_refused() {
    use tar::EntryType as T;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", {
            let mut s = Vec::new();
            entry(&mut s, b"../beside/pwned", T::Regular, b"", b"x");
            end(&mut s);
            s
        }),
        ("hard link out", {
            let mut s = Vec::new();
            entry(&mut s, b"link", T::Link, b"../beside/sentinel", b"");
            end(&mut s);
            s
        }),
    ];
    for (case, stream) in cases {
        let s = setup(case, vec![data(stream)]).await;
        let error = copy_out_unsupervised(s.agent.clone(), "/evil", &s.dir.join("dest")).await.unwrap_err();
        assert!(matches!(error, Error::Copy { kind: CopyErrorKind::Unsafe, .. }), "{case}: {error}");
        assert_nothing_beside(&s.dir, case);
        assert_eq!(std::fs::metadata(s.dir.join("beside/sentinel")).unwrap().len(), 4);
        std::fs::remove_dir_all(&s.dir).unwrap();
    }
}

#[tokio::test]
async fn a_chunk_over_the_bound_is_a_protocol_error() {
    let s = setup("oversize", vec![data(vec![0u8; MAX_COPY_CHUNK as usize + 1])]).await;
    let error = copy_out_unsupervised(s.agent.clone(), "/x", &s.dir.join("dest")).await.unwrap_err();
    assert!(matches!(&error, Error::GuestProtocol { what } if what.contains("more than")), "{error}");
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[tokio::test]
async fn a_stream_cut_short_or_going_on_after_its_archive_is_an_error() {
    use tar::EntryType as T;
    // Cut in the middle of a file's contents.
    let mut cut = Vec::new();
    entry(&mut cut, b"big", T::Regular, b"", &[7u8; 4096]);
    cut.truncate(512 + 1000);
    let s = setup("cut", vec![data(cut)]).await;
    let error = copy_out_unsupervised(s.agent.clone(), "/x", &s.dir.join("dest")).await.unwrap_err();
    eprintln!("cut short: {error}");
    std::fs::remove_dir_all(&s.dir).unwrap();

    // A whole archive, then a megabyte more of anything.
    let mut whole = Vec::new();
    entry(&mut whole, b"f", T::Regular, b"", b"x");
    end(&mut whole);
    let s = setup("trailer", vec![data(whole), data(vec![0u8; 1 << 20])]).await;
    let error = copy_out_unsupervised(s.agent.clone(), "/x", &s.dir.join("dest")).await.unwrap_err();
    assert!(matches!(&error, Error::GuestProtocol { what } if what.contains("after the end of its archive")), "{error}");
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[tokio::test]
async fn the_boxs_error_is_reported_with_its_text_bounded() {
    let error = CopyError { kind: Kind::IO.into(), path: "/p".repeat(10_000), message: "m".repeat(1 << 20), ..Default::default() };
    let s = setup("error", vec![CopyOutReadResponse { eof: true, error: Some(error).into(), ..Default::default() }]).await;
    let error = copy_out_unsupervised(s.agent.clone(), "/x", &s.dir.join("dest")).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Copy { kind: CopyErrorKind::Io, .. }), "{text}");
    assert!(text.len() < 4096, "a {} byte message", text.len());
    std::fs::remove_dir_all(&s.dir).unwrap();
}
