//! What a box's host processes cost, read from /proc: proportional set size (PSS: shared
//! pages divided among their sharers, so sums over processes add up), the guest RAM mapping
//! of the VMM, CPU time, and the host's available memory.

use std::path::Path;

/// A `Key:   N kB` line's number.
fn kib_field(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok()
}

/// PSS of a process in KiB, from /proc/PID/smaps_rollup.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| kib_field(l, "Pss"))
}

/// Rss and Pss (KiB) of the mapping that holds the guest's RAM: the one whose size is the
/// VM's memory. None when no mapping has that size.
pub fn guest_ram_kib(pid: u32, memory_mib: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    guest_ram_in(&text, u64::from(memory_mib) * 1024)
}

fn guest_ram_in(smaps: &str, size_kib: u64) -> Option<(u64, u64)> {
    let (mut size, mut rss) = (None, None);
    for line in smaps.lines() {
        // A mapping's header ("start-end perms offset dev inode [path]") starts a new block.
        if line.split_whitespace().next().is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')) {
            (size, rss) = (None, None);
            continue;
        }
        if let Some(v) = kib_field(line, "Size") {
            size = Some(v);
        } else if let Some(v) = kib_field(line, "Rss") {
            rss = Some(v);
        } else if let Some(pss) = kib_field(line, "Pss") {
            if size == Some(size_kib) {
                return Some((rss.unwrap_or(0), pss));
            }
        }
    }
    None
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "(comm)": state is field 0; utime and stime are fields 11 and 12.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The process's command name (qemu-system-x86, boxlite-shim, ...).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim().to_string()).unwrap_or_else(|_| format!("pid {pid}"))
}

fn meminfo_kib(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok()?.lines().find_map(|l| kib_field(l, key))
}

pub fn mem_available_kib() -> Option<u64> {
    meminfo_kib("MemAvailable")
}

pub fn mem_total_kib() -> Option<u64> {
    meminfo_kib("MemTotal")
}

/// One line about the machine: CPU model and count, memory, OS, kernel, load.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = mem_total_kib().map(|k| format!("{:.1} GiB", k as f64 / 1048576.0)).unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|k| k.trim().to_string()).unwrap_or_default();
    let load =
        std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    format!("{cores} x {cpu}, {memory}, {os}, Linux {kernel}, load average {load} at start")
}

/// The first line of `program --version`, or None when it does not run.
pub fn tool_version(program: &str) -> Option<String> {
    let output = std::process::Command::new(program).arg("--version").output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").to_string())
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(program))))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mapping_of_the_guest_size() {
        let smaps = "\
55d0-55d1 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64
Size:                  4 kB
Rss:                   4 kB
Pss:                   2 kB
7f00000000-7f10000000 rw-p 00000000 00:00 0
Size:             262144 kB
KernelPageSize:        4 kB
Rss:               30000 kB
Pss:               29000 kB
";
        assert_eq!(guest_ram_in(smaps, 262144), Some((30000, 29000)));
        assert_eq!(guest_ram_in(smaps, 524288), None);
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(pss_kib(me).is_some_and(|k| k > 0));
        assert!(cpu_ticks(me).is_some());
        assert!(mem_available_kib().is_some_and(|k| k > 0));
    }
}
