//! A hostile layer corpus: crafted tar archives that try to write, link or delete outside
//! the staging root. After every case nothing outside the root may have changed (sentinel
//! trees beside the root, above it and elsewhere, compared by a hash of paths, types,
//! modes, link targets, link counts and contents), and the outcome must be the expected
//! one: applied inside the root, refused with a clear error, or skipped with a warning.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use boxlite::runtime::images::unpack::Staging;
use boxlite::Error;
use sha2::{Digest, Sha256};

/// One crafted tar entry. Paths and targets are raw bytes, written into the header as they
/// are (no sanitising, unlike tar::Builder).
enum E<'a> {
    File(&'a [u8], &'a [u8], u32),
    Dir(&'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    Hardlink(&'a [u8], &'a [u8]),
    Char(&'a [u8]),
    Block(&'a [u8]),
    Fifo(&'a [u8]),
    /// A file whose header claims `size` bytes but carries `data`.
    Lying(&'a [u8], u64, &'a [u8]),
    /// A pax `path` record naming the next entry.
    PaxPath(&'a [u8]),
}

fn header(path: &[u8], kind: tar::EntryType, size: u64, mode: u32, link: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path);
        gnu.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn layer(entries: &[E]) -> Vec<u8> {
    use tar::EntryType as T;
    let mut out = Vec::new();
    let mut push = |h: tar::Header, data: &[u8]| {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    for entry in entries {
        match *entry {
            E::File(p, data, mode) => push(header(p, T::Regular, data.len() as u64, mode, b""), data),
            E::Dir(p) => push(header(p, T::Directory, 0, 0o755, b""), b""),
            E::Symlink(p, t) => push(header(p, T::Symlink, 0, 0o777, t), b""),
            E::Hardlink(p, t) => push(header(p, T::Link, 0, 0o644, t), b""),
            E::Char(p) => push(header(p, T::Char, 0, 0o666, b""), b""),
            E::Block(p) => push(header(p, T::Block, 0, 0o660, b""), b""),
            E::Fifo(p) => push(header(p, T::Fifo, 0, 0o644, b""), b""),
            E::Lying(p, size, data) => push(header(p, T::Regular, size, 0o644, b""), data),
            E::PaxPath(p) => {
                let mut record = format!(" path={}\n", String::from_utf8_lossy(p));
                // The length counts its own digits.
                let mut len = record.len() + 1;
                while len != record.len() + len.to_string().len() {
                    len = record.len() + len.to_string().len();
                }
                record = format!("{len}{record}");
                push(header(b"././@PaxHeader", T::XHeader, record.len() as u64, 0o644, b""), record.as_bytes());
            }
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A fresh world per case: `top/outside/` (a sentinel tree beside the root),
/// `top/stage/sentinel.txt` (the root's parent), `top/stage/root/` (the staging root), and a
/// sentinel directory elsewhere in /tmp.
struct World {
    top: PathBuf,
    root: PathBuf,
    elsewhere: PathBuf,
}

impl World {
    fn new(case: &str) -> World {
        let top = std::env::temp_dir().join(format!("boxlite-unpack-{}-{case}", std::process::id()));
        let elsewhere = std::env::temp_dir().join(format!("boxlite-sentinel-{}-{case}", std::process::id()));
        for dir in [&top, &elsewhere] {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::fs::create_dir_all(top.join("outside/dir")).unwrap();
        std::fs::write(top.join("outside/secret.txt"), b"secret").unwrap();
        std::fs::write(top.join("outside/dir/file"), b"nested").unwrap();
        std::fs::create_dir_all(top.join("stage/root")).unwrap();
        std::fs::write(top.join("stage/sentinel.txt"), b"parent of the root").unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("canary"), b"canary").unwrap();
        let root = top.join("stage/root");
        World { top, root, elsewhere }
    }

    /// Hash of everything outside the root.
    fn outside_hash(&self) -> String {
        let mut lines = Vec::new();
        walk(&self.top, &self.top, &self.root, &mut lines);
        walk(&self.elsewhere, &self.elsewhere, &self.root, &mut lines);
        lines.sort();
        format!("{:x}", Sha256::digest(lines.join("\n").as_bytes()))
    }

    fn in_root(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.top);
        let _ = std::fs::remove_dir_all(&self.elsewhere);
    }
}

fn walk(base: &Path, dir: &Path, skip: &Path, lines: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == skip {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(base).unwrap().display().to_string();
        let what = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            format!("file {:x}", Sha256::digest(std::fs::read(&path).unwrap()))
        };
        lines.push(format!("{rel} {:o} nlink={} {what}", meta.permissions().mode(), meta.nlink()));
        if meta.is_dir() {
            walk(base, &path, skip, lines);
        }
    }
}

enum Expect {
    /// Applied; the check looks at the root.
    Applied(fn(&World)),
    /// Refused with an error whose text contains this.
    Refused(&'static str),
    /// Applied with a warning containing this.
    Warned(&'static str),
}

fn run_case(name: &str, build: fn(&World) -> Vec<u8>, expect: Expect) {
    let world = World::new(name);
    let before = world.outside_hash();
    let archive = build(&world);
    let result = Staging::create(&world.root).unwrap().apply_layer(&archive[..]);
    assert_eq!(world.outside_hash(), before, "case {name}: something outside the root changed");
    match (expect, result) {
        (Expect::Applied(check), Ok(report)) => {
            assert!(report.warnings.is_empty(), "case {name}: unexpected warnings {:?}", report.warnings);
            check(&world);
        }
        (Expect::Refused(words), Err(e)) => {
            let text = e.to_string();
            assert!(matches!(e, Error::UnsafeLayer { .. } | Error::Io { .. }), "case {name}: {text}");
            assert!(text.contains(words), "case {name}: error {text:?} should mention {words:?}");
        }
        (Expect::Warned(words), Ok(report)) => {
            assert!(report.warnings.iter().any(|w| w.contains(words)), "case {name}: warnings {:?}", report.warnings);
        }
        (Expect::Applied(_) | Expect::Warned(_), Err(e)) => panic!("case {name}: refused: {e}"),
        (Expect::Refused(_), Ok(_)) => panic!("case {name}: applied, should have been refused"),
    }
}

fn abs(world: &World, rel: &str) -> Vec<u8> {
    world.top.join(rel).into_os_string().into_encoded_bytes()
}

fn read(world: &World, path: &str) -> Vec<u8> {
    std::fs::read(world.in_root(path)).unwrap_or_else(|e| panic!("{path} in the root: {e}"))
}

macro_rules! case {
    ($name:ident, $build:expr, $expect:expr) => {
        #[test]
        fn $name() {
            run_case(stringify!($name), $build, $expect);
        }
    };
}

// --- paths -------------------------------------------------------------------------------
case!(
    absolute_path_lands_inside,
    |_| layer(&[E::File(b"/etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644)]),
    Expect::Applied(|w| assert_eq!(read(w, "etc/passwd"), b"root:x:0:0::/:/bin/sh\n"))
);
case!(dotdot_path_is_refused, |_| layer(&[E::File(b"../sentinel.txt", b"owned", 0o644)]), Expect::Refused("climbs above the root"));
case!(deep_dotdot_is_refused, |_| layer(&[E::File(b"a/b/../../../../x", b"owned", 0o644)]), Expect::Refused("climbs above the root"));
case!(inner_dotdot_stays_inside, |_| layer(&[E::File(b"a/../b", b"fine", 0o644)]), Expect::Applied(|w| assert_eq!(read(w, "b"), b"fine")));
case!(
    pax_path_with_dotdot_is_refused,
    |_| layer(&[E::PaxPath(b"../../escape"), E::File(b"innocent", b"owned", 0o644)]),
    Expect::Refused("climbs above the root")
);
case!(
    non_utf8_name_is_kept,
    |_| layer(&[E::File(b"caf\xe9", b"bytes", 0o644)]),
    Expect::Applied(|w| {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(std::fs::read(w.root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"))).unwrap(), b"bytes");
    })
);

// --- symlinks ----------------------------------------------------------------------------
case!(
    absolute_symlink_then_file_through_it,
    |_| layer(&[E::Symlink(b"evil", b"/"), E::File(b"evil/etc/x", b"in", 0o644)]),
    Expect::Applied(|w| assert_eq!(read(w, "etc/x"), b"in"))
);
case!(
    symlink_to_host_path_then_file_through_it,
    |w| {
        let target = abs(w, "outside");
        layer(&[E::Symlink(b"evil", &target), E::File(b"evil/secret.txt", b"owned", 0o644)])
    },
    Expect::Applied(|w| {
        let inside = w.root.join(w.top.join("outside/secret.txt").strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(inside).unwrap(), b"owned", "the write lands at the same path inside the root");
    })
);
case!(
    relative_symlink_escape_is_clamped,
    |_| layer(&[E::Symlink(b"evil", b"../../outside"), E::File(b"evil/secret.txt", b"owned", 0o644)]),
    Expect::Applied(|w| assert_eq!(read(w, "outside/secret.txt"), b"owned"))
);
case!(
    symlink_chain_is_clamped,
    |_| layer(&[E::Symlink(b"a", b"b"), E::Symlink(b"b", b"c"), E::Symlink(b"c", b"../../../.."), E::File(b"a/x", b"in", 0o644),]),
    Expect::Applied(|w| assert_eq!(read(w, "x"), b"in"))
);
case!(
    symlink_loop_is_refused,
    |_| layer(&[E::Symlink(b"a", b"b"), E::Symlink(b"b", b"a"), E::File(b"a/x", b"loop", 0o644)]),
    Expect::Refused("parent directory")
);
case!(
    symlinked_parent_dir_to_host,
    |w| {
        let target = abs(w, "outside/dir");
        layer(&[E::Symlink(b"etc", &target), E::File(b"etc/file", b"owned", 0o644)])
    },
    Expect::Applied(|_| {})
);
case!(
    symlink_inside_nested_dir_escape,
    |_| layer(&[E::Dir(b"d"), E::Symlink(b"d/link", b"../../../outside"), E::File(b"d/link/secret.txt", b"owned", 0o644),]),
    Expect::Applied(|w| assert_eq!(read(w, "outside/secret.txt"), b"owned"))
);
case!(
    file_replaces_symlink_instead_of_writing_through,
    |w| {
        let target = abs(w, "outside/secret.txt");
        layer(&[E::Symlink(b"x", &target), E::File(b"x", b"replaced", 0o644)])
    },
    Expect::Applied(|w| {
        assert!(!std::fs::symlink_metadata(w.in_root("x")).unwrap().file_type().is_symlink());
        assert_eq!(read(w, "x"), b"replaced");
    })
);
case!(
    dir_replaces_symlink_to_host_dir,
    |w| {
        let target = abs(w, "outside/dir");
        layer(&[E::Symlink(b"d", &target), E::Dir(b"d"), E::File(b"d/file", b"mine", 0o644)])
    },
    Expect::Applied(|w| assert_eq!(read(w, "d/file"), b"mine"))
);
case!(
    dangling_symlink_is_kept_verbatim,
    |_| layer(&[E::Symlink(b"l", b"/no/where")]),
    Expect::Applied(|w| assert_eq!(std::fs::read_link(w.in_root("l")).unwrap(), Path::new("/no/where")))
);

// --- hard links --------------------------------------------------------------------------
case!(
    hardlink_to_host_absolute_path_is_refused,
    |w| {
        let target = abs(w, "outside/secret.txt");
        layer(&[E::Hardlink(b"h", &target)])
    },
    Expect::Refused("hard link")
);
case!(
    hardlink_with_dotdot_is_refused,
    |_| layer(&[E::Hardlink(b"h", b"../../outside/secret.txt")]),
    Expect::Refused("climbs above the root")
);
case!(
    hardlink_through_symlinked_dir_is_refused,
    |w| {
        let target = abs(w, "outside");
        layer(&[E::Symlink(b"d", &target), E::Hardlink(b"h", b"d/secret.txt")])
    },
    Expect::Refused("hard link")
);
case!(
    hardlink_inside_root_works,
    |_| layer(&[E::File(b"x", b"shared", 0o644), E::Hardlink(b"h", b"/x")]),
    Expect::Applied(|w| {
        assert_eq!(read(w, "h"), b"shared");
        assert_eq!(std::fs::metadata(w.in_root("x")).unwrap().nlink(), 2);
    })
);
case!(
    file_replacing_a_hardlink_leaves_the_other_name,
    |_| layer(&[E::File(b"x", b"original", 0o644), E::Hardlink(b"h", b"x"), E::File(b"h", b"new", 0o644),]),
    Expect::Applied(|w| {
        assert_eq!(read(w, "x"), b"original");
        assert_eq!(read(w, "h"), b"new");
    })
);
case!(
    hardlink_to_symlink_links_the_symlink,
    |w| {
        let target = abs(w, "outside/secret.txt");
        layer(&[E::Symlink(b"s", &target), E::Hardlink(b"h", b"s")])
    },
    Expect::Applied(|w| assert!(std::fs::symlink_metadata(w.in_root("h")).unwrap().file_type().is_symlink()))
);

// --- whiteouts ---------------------------------------------------------------------------
case!(whiteout_of_dotdot_is_refused, |_| layer(&[E::Dir(b"a"), E::File(b"a/.wh...", b"", 0o644)]), Expect::Refused("whiteout"));
case!(whiteout_of_dot_is_refused, |_| layer(&[E::File(b".wh..", b"", 0o644)]), Expect::Refused("whiteout"));
case!(top_level_whiteout_of_dotdot_is_refused, |_| layer(&[E::File(b".wh...", b"", 0o644)]), Expect::Refused("whiteout"));
case!(
    whiteout_through_symlink_to_host_deletes_nothing_outside,
    |w| {
        let target = abs(w, "stage");
        layer(&[E::Symlink(b"s", &target), E::File(b"s/.wh.sentinel.txt", b"", 0o644)])
    },
    Expect::Applied(|_| {})
);
case!(
    whiteout_removes_inside_root,
    |_| layer(&[
        E::File(b"gone", b"x", 0o644),
        E::Dir(b"d"),
        E::File(b"d/f", b"x", 0o644),
        E::File(b".wh.gone", b"", 0o644),
        E::File(b".wh.d", b"", 0o644)
    ]),
    Expect::Applied(|w| {
        assert!(!w.in_root("gone").exists());
        assert!(!w.in_root("d").exists());
    })
);
case!(
    opaque_whiteout_through_symlink_to_host_is_harmless,
    |w| {
        let target = abs(w, "outside");
        layer(&[E::Symlink(b"o", &target), E::File(b"o/.wh..wh..opq", b"", 0o644)])
    },
    Expect::Applied(|_| {})
);
case!(
    opaque_whiteout_at_the_root_stays_inside,
    |_| layer(&[E::Symlink(b"o", b"/"), E::File(b"o/.wh..wh..opq", b"", 0o644)]),
    Expect::Applied(|_| {})
);

// --- headers, types, metadata ------------------------------------------------------------
case!(huge_size_header_is_refused, |_| layer(&[E::Lying(b"big", 8 << 30, b"tiny")]), Expect::Refused("malformed or truncated"));
case!(
    device_nodes_are_skipped_with_a_warning,
    |_| layer(&[E::Char(b"dev/evil-null"), E::Block(b"dev/evil-sda")]),
    Expect::Warned("device node skipped")
);
case!(
    setuid_file_keeps_its_mode_inside,
    |_| layer(&[E::File(b"usr/bin/su", b"\x7fELF", 0o4755)]),
    Expect::Applied(|w| assert_eq!(std::fs::metadata(w.in_root("usr/bin/su")).unwrap().permissions().mode() & 0o7777, 0o4755))
);
case!(
    duplicate_entries_last_wins,
    |_| layer(&[E::File(b"x", b"one", 0o644), E::File(b"x", b"two", 0o600), E::Dir(b"y"), E::File(b"y", b"file now", 0o644)]),
    Expect::Applied(|w| {
        assert_eq!(read(w, "x"), b"two");
        assert_eq!(read(w, "y"), b"file now");
    })
);
case!(
    fifo_is_created,
    |_| layer(&[E::Fifo(b"run/pipe")]),
    Expect::Applied(|w| {
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(w.in_root("run/pipe")).unwrap().file_type().is_fifo());
    })
);
case!(
    root_entry_is_ignored,
    |_| layer(&[E::Dir(b"./"), E::Dir(b"/"), E::File(b"ok", b"1", 0o644)]),
    Expect::Applied(|w| assert_eq!(read(w, "ok"), b"1"))
);

/// Whiteouts across two layers: the second hides a file and empties a directory of what the
/// first put there, but keeps what it adds itself.
#[test]
fn whiteouts_and_opaque_dirs_across_layers() {
    let world = World::new("two-layers");
    let staging = Staging::create(&world.root).unwrap();
    staging
        .apply_layer(&layer(&[E::File(b"a", b"1", 0o644), E::Dir(b"d"), E::File(b"d/old", b"1", 0o644), E::File(b"keep", b"1", 0o644)])[..])
        .unwrap();
    staging
        .apply_layer(&layer(&[E::File(b".wh.a", b"", 0o644), E::File(b"d/new", b"2", 0o644), E::File(b"d/.wh..wh..opq", b"", 0o644)])[..])
        .unwrap();
    assert!(!world.in_root("a").exists());
    assert!(!world.in_root("d/old").exists(), "the opaque dir hides the lower layer's files");
    assert_eq!(read(&world, "d/new"), b"2", "but keeps its own layer's");
    assert_eq!(read(&world, "keep"), b"1");
}

/// The image chooses an entry's path; the error quotes it at a bounded length (and says how
/// long it was), so a layer cannot make the host's errors and logs as large as it likes.
#[test]
fn a_4k_path_is_quoted_at_a_bounded_length() {
    let world = World::new("long-path");
    let path = format!("../{}", "x".repeat(4096));
    let archive = layer(&[E::PaxPath(path.as_bytes()), E::File(b"innocent", b"owned", 0o644)]);
    let error = Staging::create(&world.root).unwrap().apply_layer(&archive[..]).expect_err("a path above the root is refused");
    let text = error.to_string();
    assert!(text.contains("climbs above the root"), "{text}");
    assert!(text.len() < 1024, "the message is {} bytes: {text}", text.len());
    assert!(text.contains(&format!("({} bytes)", path.len())), "the cut should say how long the path was: {text}");
}
