//! The logs a failed VM leaves (console.log, shim.log), quoted in errors at a bounded size.

use std::io::{Read, Seek, SeekFrom};

use super::*;

/// Lines of console.log / shim.log quoted in errors.
const LOG_TAIL_LINES: usize = 20;
/// How much of the end of a log an error's quote is taken from.
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// The longest log line an error quotes, in chars.
const LOG_TAIL_LINE_CHARS: usize = 300;

pub(super) fn shim_exited_error(spec: &VmSpec, exit: &ShimExit) -> Error {
    Error::ShimExited {
        status: exit.to_string(),
        log: spec.shim_log(),
        log_tail: log_tail(&spec.shim_log()),
        console: spec.console_log(),
        console_tail: log_tail(&spec.console_log()),
    }
}

/// The last lines of a log file, for error messages. The guest writes the console log (and
/// a VMM can fill the shim's), so the quote is bounded: only the last `LOG_TAIL_BYTES` (64 KiB) are
/// read, control characters and escape sequences are dropped (a terminal showing the error
/// does not interpret them), and each line is cut at `LOG_TAIL_LINE_CHARS`.
pub fn log_tail(path: &Path) -> String {
    let tail = std::fs::File::open(path).and_then(tail_of);
    match tail {
        Ok(tail) => tail,
        Err(e) => format!("  (cannot read {}: {e})", path.display()),
    }
}

/// The last [`LOG_TAIL_LINES`] non-empty lines of what `reader` holds, cleaned and indented,
/// reading no more than its last [`LOG_TAIL_BYTES`].
fn tail_of(mut reader: impl Read + Seek) -> std::io::Result<String> {
    let end = reader.seek(SeekFrom::End(0))?;
    let start = end.saturating_sub(LOG_TAIL_BYTES);
    reader.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    reader.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    // Read from mid-file, the first line is a piece of one: drop it when a whole one follows.
    let text = match text.split_once('\n') {
        Some((_, rest)) if start > 0 => rest,
        _ => &text,
    };
    let lines: Vec<String> = text.lines().map(clean_log_line).filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Ok("  (empty)".into());
    }
    let last = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    Ok(last.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n"))
}

/// One log line without escape sequences (CSI: ESC [ ... final byte) or other control
/// characters but tab (C0, DEL, C1), cut at [`LOG_TAIL_LINE_CHARS`] chars.
fn clean_log_line(line: &str) -> String {
    let mut out = String::new();
    let mut kept = 0;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, up to and including the final byte (@ to ~).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        if kept == LOG_TAIL_LINE_CHARS {
            out.push_str("...");
            break;
        }
        out.push(c);
        kept += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn a_100_mb_log_is_tailed_from_its_last_64_kib() {
        let path = std::env::temp_dir().join(format!("boxlite-log-tail-{}.log", std::process::id()));
        let tail: String = (1..=25).map(|n| format!("line {n}\n")).collect();
        {
            let file = std::fs::File::create(&path).unwrap();
            // Sparse: 100 MB of NULs (control characters, dropped) and then the lines.
            file.set_len(100_000_000).unwrap();
            use std::os::unix::fs::FileExt;
            file.write_all_at(tail.as_bytes(), 100_000_000).unwrap();
        }
        let mut counting = Counting { inner: std::fs::File::open(&path).unwrap(), read: 0 };
        let quoted = tail_of(&mut counting).unwrap();
        let from_path = log_tail(&path);
        let _ = std::fs::remove_file(&path);
        assert!(counting.read <= LOG_TAIL_BYTES, "read {} bytes of a 100 MB file", counting.read);
        let expected: Vec<String> = (6..=25).map(|n| format!("  | line {n}")).collect();
        assert_eq!(quoted, expected.join("\n"));
        assert_eq!(from_path, quoted);
    }

    #[test]
    fn a_read_from_mid_file_drops_the_partial_first_line() {
        let mut log = vec![b'a'; LOG_TAIL_BYTES as usize];
        log.extend_from_slice(b"\nwhole\n");
        let quoted = tail_of(std::io::Cursor::new(log)).unwrap();
        assert_eq!(quoted, "  | whole");
    }

    #[test]
    fn escape_sequences_and_control_characters_are_dropped() {
        let log = "\u{1b}[31mred\u{1b}[0m plain\u{7} bell\u{7f} del\u{9b} c1\u{8} bs\ttab\rcr\u{1b}[2J\u{1b}[1;1H\n\u{1b}[K\n";
        let quoted = tail_of(std::io::Cursor::new(log.as_bytes().to_vec())).unwrap();
        assert_eq!(quoted, "  | red plain bell del c1 bs\ttabcr");
        assert!(!quoted.chars().any(|c| c.is_control() && c != '\t' && c != '\n'), "{quoted:?}");
    }

    #[test]
    fn long_lines_are_cut() {
        let log = format!("{}\nshort\n", "y".repeat(10_000));
        let quoted = tail_of(std::io::Cursor::new(log.into_bytes())).unwrap();
        let lines: Vec<&str> = quoted.lines().collect();
        assert_eq!(lines, [format!("  | {}...", "y".repeat(LOG_TAIL_LINE_CHARS)).as_str(), "  | short"]);
    }

    #[test]
    fn an_empty_or_blank_log_says_so() {
        assert_eq!(tail_of(std::io::Cursor::new(b"\n \n\x1b[0m\n".to_vec())).unwrap(), "  (empty)");
    }
}
