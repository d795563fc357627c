//! The jail's file system. The shim moves into new mount, pid, ipc, uts and net namespaces and
//! pivots into a tmpfs that holds only what the engine needs, each host path bound at the
//! same path (so the spec's paths stay valid): the kernel and initramfs, the disks and their
//! qcow2 backing files, the VMM's own directory, the volumes' shared directories, a few
//! device nodes and, for qemu, the programs (virtiofsd too when there are volumes) with
//! their shared libraries and qemu's firmware. Everything but the VMM's directory, the
//! writable disks and the read-write volumes is read-only; the tmpfs itself is remounted
//! read-only.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::qcow2;
use boxlite_vmspec::engine::EngineKind;
use boxlite_vmspec::spec::{DiskFormat, VmSpec};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// How deep a chain of qcow2 backing files may go (ours is one level: overlay -> base).
const MAX_BACKING_DEPTH: usize = 8;
/// Device nodes every engine may open (glib and libc read randomness; children get /dev/null).
const DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    /// The VMM writes it: no exec, no devices, no set-uid.
    ReadWrite,
    Device,
}

#[derive(Debug, Clone)]
pub struct JailMount {
    /// Host path, bound at the same path inside the jail.
    pub path: PathBuf,
    pub access: Access,
}

/// What the jail must hold for this spec. Runs before the namespaces exist: it may start
/// the dynamic loader to list a program's libraries.
pub fn plan(spec: &VmSpec) -> Result<Vec<JailMount>, String> {
    let mut mounts = vec![
        JailMount { path: spec.kernel.clone(), access: Access::ReadOnly },
        JailMount { path: spec.initramfs.clone(), access: Access::ReadOnly },
        JailMount { path: spec.vmm_dir(), access: Access::ReadWrite },
    ];
    for disk in &spec.disks {
        let access = if disk.read_only { Access::ReadOnly } else { Access::ReadWrite };
        mounts.push(JailMount { path: disk.path.clone(), access });
        if disk.format == DiskFormat::Qcow2 {
            for backing in qcow2_backing_chain(&disk.path)? {
                mounts.push(JailMount { path: backing, access: Access::ReadOnly });
            }
        }
    }
    for device in DEVICES {
        mounts.push(JailMount { path: device.into(), access: Access::Device });
    }
    if spec.uses_dev_kvm() {
        mounts.push(JailMount { path: "/dev/kvm".into(), access: Access::Device });
    }
    // Volumes: each shared directory at its own path, read-only when the share is (so even a
    // compromised server cannot write it), and for qemu the server that serves them.
    for share in &spec.shares {
        let access = if share.read_only { Access::ReadOnly } else { Access::ReadWrite };
        mounts.push(JailMount { path: share.host_path.clone(), access });
    }
    if spec.engine == EngineKind::Qemu {
        let qemu = spec.qemu.as_deref().ok_or("the spec names no qemu binary")?;
        let vhost = spec.vhost_vsock.as_deref().ok_or("the spec names no vhost-device-vsock binary")?;
        let mut programs = vec![qemu, vhost];
        if !spec.shares.is_empty() {
            programs.push(spec.virtiofsd.as_deref().ok_or("the spec names no virtiofsd binary")?);
        }
        for program in programs {
            mounts.push(JailMount { path: program.to_path_buf(), access: Access::ReadOnly });
            for dir in library_dirs(program)? {
                mounts.push(JailMount { path: dir, access: Access::ReadOnly });
            }
        }
        // qemu finds its firmware (qboot.rom, pvh.bin) at <prefix>/share/qemu.
        if let Some(firmware) = qemu.parent().and_then(Path::parent).map(|prefix| prefix.join("share/qemu")) {
            if firmware.is_dir() {
                mounts.push(JailMount { path: firmware, access: Access::ReadOnly });
            }
        }
        if Path::new("/etc/ld.so.cache").is_file() {
            mounts.push(JailMount { path: "/etc/ld.so.cache".into(), access: Access::ReadOnly });
        }
    }
    for mount in &mut mounts {
        mount.path = normalize(&mount.path);
    }
    // Parents before children; one mount per path.
    mounts.sort_by(|a, b| a.path.cmp(&b.path));
    mounts.dedup_by(|a, b| a.path == b.path);
    without_covered(mounts)
}

/// Drops mounts that a directory bound before them already shows (say a kernel under a
/// library directory): binding them would mean creating a mount point inside a host
/// directory. One that needs more access than the directory gives is an error.
fn without_covered(mounts: Vec<JailMount>) -> Result<Vec<JailMount>, String> {
    let mut kept: Vec<JailMount> = Vec::new();
    for mount in mounts {
        let outer = kept.iter().find(|outer| mount.path.starts_with(&outer.path) && outer.path.is_dir());
        match outer {
            None => kept.push(mount),
            Some(outer) if mount.access == Access::ReadOnly || mount.access == outer.access => {}
            Some(outer) => {
                return Err(format!(
                    "{} must be {:?} in the jail but lies inside {}, which the jail shows {:?}; move it elsewhere",
                    mount.path.display(),
                    mount.access,
                    outer.path.display(),
                    outer.access
                ))
            }
        }
    }
    Ok(kept)
}

/// Enters the namespaces and pivots into the jail. Returns the namespaces entered.
pub fn enter(spec: &VmSpec, mounts: &[JailMount]) -> Result<Vec<String>, String> {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNET;
    let mut entered = vec!["mnt", "ipc", "uts", "net"];
    // A new pid namespace holds the processes the shim starts (qemu and its backend): the
    // krun shim starts none, it is the VMM itself.
    if spec.engine == EngineKind::Qemu {
        flags |= CloneFlags::CLONE_NEWPID;
        entered.push("pid");
    }
    unshare(flags).map_err(|e| {
        format!("unshare({entered:?}): {e}; the jail needs root (CAP_SYS_ADMIN), or (debugging only) turn the namespaces protection off")
    })?;
    // Nothing mounted from here on may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("make / private: {e}"))?;

    let root = spec.jail_dir();
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), &root, Some("tmpfs"), tmpfs_flags, Some("mode=0755,size=1m,nr_inodes=4096"))
        .map_err(|e| format!("mount the jail's tmpfs on {}: {e}", root.display()))?;
    for entry in mounts {
        bind(&root, entry)?;
    }
    if !spec.shares.is_empty() {
        // virtio-fs servers reopen files through /proc/self/fd. qemu: an empty mount point,
        // on which each virtiofsd mounts a /proc of the box's pid namespace in a mount
        // namespace of its own (src/shim/volumes.rs); the others see it empty. krun: libkrun
        // serves the volumes in this process, which keeps the host's pid namespace, so its
        // /proc shows processes only (subset=pid) and only those of its own uid
        // (hidepid=invisible): after the uid drop, the shim itself (untested: no hardware KVM).
        let proc = root.join("proc");
        std::fs::create_dir(&proc).map_err(|e| format!("create {}: {e}", proc.display()))?;
        if spec.engine == EngineKind::Krun {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("proc"), &proc, Some("proc"), flags, Some("hidepid=invisible,subset=pid"))
                .map_err(|e| format!("mount /proc for the volumes (hidepid=invisible,subset=pid needs Linux 5.8): {e}"))?;
        }
    }

    std::env::set_current_dir(&root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one, detached next.
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root into {}: {e}", root.display()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the host's root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs_flags, None::<&str>)
        .map_err(|e| format!("remount the jail's root read-only: {e}"))?;
    Ok(entered.into_iter().map(String::from).collect())
}

/// Binds a host path at the same path under `root`, with the flags its access allows.
fn bind(root: &Path, entry: &JailMount) -> Result<(), String> {
    let source = &entry.path;
    let relative = source.strip_prefix("/").map_err(|_| format!("{} is not an absolute path", source.display()))?;
    let target = root.join(relative);
    let is_dir = std::fs::metadata(source).map_err(|e| format!("the jail needs {}: {e}", source.display()))?.is_dir();
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    let created = if is_dir { std::fs::create_dir(&target) } else { std::fs::File::create(&target).map(drop) };
    created.map_err(|e| format!("create the mount point {}: {e}", target.display()))?;
    mount(Some(source.as_path()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind {} into the jail: {e}", source.display()))?;
    let flags = match entry.access {
        Access::ReadOnly => MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Access::ReadWrite => MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Access::Device => MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    };
    mount(None::<&str>, &target, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None::<&str>)
        .map_err(|e| format!("remount {} in the jail ({:?}): {e}", source.display(), entry.access))
}

/// Removes `.` and resolves `..` lexically, so that the path built in the jail is the path
/// the VMM will open.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The directories of a dynamically linked program's shared libraries and loader, as the
/// loader itself resolves them (`ld.so --list`). A static program needs none.
fn library_dirs(program: &Path) -> Result<Vec<PathBuf>, String> {
    let Some(interpreter) = elf_interpreter(program)? else { return Ok(Vec::new()) };
    let output = Command::new(&interpreter)
        .arg("--list")
        .arg(program)
        .output()
        .map_err(|e| format!("run {} --list {}: {e}", interpreter.display(), program.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --list {} failed ({}): {}",
            interpreter.display(),
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let mut dirs = vec![interpreter.parent().unwrap_or(Path::new("/")).to_path_buf()];
    // Lines look like "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)".
    for token in output.stdout.split(|b| b.is_ascii_whitespace()) {
        if token.starts_with(b"/") {
            if let Some(dir) = Path::new(OsStr::from_bytes(token)).parent() {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

/// The PT_INTERP path of an ELF64 little-endian program, or None for a static one.
fn elf_interpreter(program: &Path) -> Result<Option<PathBuf>, String> {
    let bytes = read_prefix(program, 64 * 1024)?;
    let bad = || format!("{} is not an x86_64 ELF program", program.display());
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(bad());
    }
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize);
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else { return Err(bad()) };
    for index in 0..phnum {
        let header = phoff + index * phentsize;
        let Some(kind) = bytes.get(header..header + 4) else { return Err(bad()) };
        if kind == 3u32.to_le_bytes() {
            let (Some(offset), Some(size)) = (u64_at(header + 8), u64_at(header + 32)) else { return Err(bad()) };
            let path = bytes.get(offset..offset + size).ok_or_else(bad)?;
            let path = path.split(|&b| b == 0).next().unwrap_or_default();
            return Ok(Some(PathBuf::from(OsStr::from_bytes(path))));
        }
    }
    Ok(None)
}

/// The backing files of a qcow2 image, nearest first.
fn qcow2_backing_chain(image: &Path) -> Result<Vec<PathBuf>, String> {
    let mut chain = Vec::new();
    let mut current = image.to_path_buf();
    while let Some(backing) = qcow2::read_header(&current)?.and_then(|header| header.backing_file) {
        // Relative names are relative to the image that names them (qemu's rule).
        let backing = current.parent().unwrap_or(Path::new("/")).join(backing);
        if chain.len() == MAX_BACKING_DEPTH {
            return Err(format!("{} has more than {MAX_BACKING_DEPTH} levels of backing files", image.display()));
        }
        chain.push(backing.clone());
        current = backing;
    }
    Ok(chain)
}

fn read_prefix(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    }

    #[test]
    fn a_path_inside_a_bound_directory_is_not_bound_again() {
        let mount = |path: &str, access| JailMount { path: path.into(), access };
        let kept = without_covered(vec![mount("/usr/share", Access::ReadOnly), mount("/usr/share/qemu", Access::ReadOnly)]).unwrap();
        assert_eq!(kept.len(), 1);
        let writable_inside = without_covered(vec![mount("/usr/share", Access::ReadOnly), mount("/usr/share/disk", Access::ReadWrite)]);
        assert!(writable_inside.unwrap_err().contains("lies inside /usr/share"));
        assert_eq!(without_covered(vec![mount("/usr/sharex", Access::ReadOnly), mount("/usr/share", Access::ReadOnly)]).unwrap().len(), 2);
    }

    #[test]
    fn a_dynamic_program_lists_its_loader_and_library_dirs() {
        let dirs = library_dirs(Path::new("/bin/sh")).unwrap();
        assert!(dirs.iter().any(|d| d.join("ld-linux-x86-64.so.2").exists()), "{dirs:?}");
        assert!(dirs.iter().any(|d| d.join("libc.so.6").exists()), "{dirs:?}");
    }

    #[test]
    fn a_static_program_needs_no_libraries() {
        assert_eq!(elf_interpreter(Path::new("/bin/busybox")).unwrap(), None);
        assert!(elf_interpreter(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn the_backing_chain_of_an_overlay_is_read_from_its_header() {
        let dir = std::env::temp_dir().join(format!("boxlite-qcow2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base.raw");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let overlay = dir.join("overlay.qcow2");
        let status =
            Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(&base).arg(&overlay).status().unwrap();
        assert!(status.success());
        assert_eq!(qcow2_backing_chain(&overlay).unwrap(), vec![base.clone()]);
        assert!(qcow2::read_header(&base).unwrap().is_none(), "a raw file is no qcow2 image");
        assert_eq!(qcow2::read_header(&overlay).unwrap().unwrap().virtual_size, 1 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
