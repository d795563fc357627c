//! The root that the box's processes see: the box's disk when the kernel command line names
//! one (`boxlite.root=/dev/vda`), else the initramfs itself. Paths inside it are resolved
//! with openat2(RESOLVE_IN_ROOT), so an absolute symlink in the image (`/bin/sh ->
//! /bin/busybox`) means the image's file, never the agent's.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use boxlite_protocol::{CMDLINE_ROOT_DEVICE, CMDLINE_ROOT_MODE};
use nix::mount::{mount, MsFlags};

use crate::log;
use crate::sys;

/// Where the box's disk is mounted inside the initramfs.
const ROOT_MOUNT_POINT: &str = "/rootfs";

pub struct Root {
    /// The root as the agent sees it ("/" or "/rootfs").
    pub path: PathBuf,
    dir: OwnedFd,
}

impl Root {
    /// Mounts the box's root disk if the command line names one, with /proc, /sys, /dev and
    /// /tmp inside it.
    pub fn from_cmdline(cmdline: &str) -> Result<Root, String> {
        let value = |key: &str| {
            let prefix = format!("{key}=");
            cmdline.split_whitespace().find_map(|w| w.strip_prefix(&prefix).map(str::to_string))
        };
        let Some(device) = value(CMDLINE_ROOT_DEVICE) else {
            return Root::open(Path::new("/"));
        };
        let read_only = value(CMDLINE_ROOT_MODE).as_deref() == Some("ro");
        std::fs::create_dir_all(ROOT_MOUNT_POINT).map_err(|e| format!("mkdir {ROOT_MOUNT_POINT}: {e}"))?;
        let flags = if read_only { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        mount(Some(device.as_str()), ROOT_MOUNT_POINT, Some("ext4"), flags, None::<&str>)
            .map_err(|e| format!("mount {device} (ext4) on {ROOT_MOUNT_POINT}: {e}"))?;
        for (source, target, fstype, flags) in [
            ("/dev", "dev", None, MsFlags::MS_BIND | MsFlags::MS_REC),
            ("proc", "proc", Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
            ("sysfs", "sys", Some("sysfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
            ("tmpfs", "tmp", Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
        ] {
            let target = Path::new(ROOT_MOUNT_POINT).join(target);
            if !target.is_dir() && std::fs::create_dir(&target).is_err() {
                log!("the root has no {} and it cannot be created (read-only?); skipping", target.display());
                continue;
            }
            let data = (fstype == Some("tmpfs")).then_some("mode=1777");
            if let Err(e) = mount(Some(source), &target, fstype, flags, data) {
                log!("mount {source} on {}: {e}", target.display());
            }
        }
        if !read_only {
            grow_to_device(&device);
        }
        log!("root: {device} ({}) on {ROOT_MOUNT_POINT}", if read_only { "read-only" } else { "read-write" });
        Root::open(Path::new(ROOT_MOUNT_POINT))
    }

    fn open(path: &Path) -> Result<Root, String> {
        let dir = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(Root { path: path.to_path_buf(), dir: dir.into() })
    }

    /// Opens `path` (absolute or relative to the root) inside the root with O_PATH.
    pub fn resolve(&self, path: &str) -> io::Result<OwnedFd> {
        self.open_in_root(path, libc::O_PATH | libc::O_CLOEXEC)
    }

    /// Reads a small file inside the root (e.g. /etc/passwd).
    pub fn read_to_string(&self, path: &str) -> io::Result<String> {
        let fd = self.open_in_root(path, libc::O_RDONLY | libc::O_CLOEXEC)?;
        io::read_to_string(std::fs::File::from(fd))
    }

    /// Opens `path` (absolute or relative to the root) inside the root with `flags`
    /// (openat2 RESOLVE_IN_ROOT: symlinks and `..` never lead out of it).
    pub fn open_in_root(&self, path: &str, flags: i32) -> io::Result<OwnedFd> {
        let c_path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        sys::openat2_in_root(self.dir.as_fd(), &c_path, flags)
    }
}

/// Grows the mounted root file system to fill its device (online ext4 resize): a box whose
/// disk was made larger than its image's gets the room. Nothing happens when it already fits.
fn grow_to_device(device: &str) {
    let result = (|| -> Result<Option<u64>, String> {
        let dev = std::fs::File::open(device).map_err(|e| format!("open {device}: {e}"))?;
        let bytes = sys::block_device_size(dev.as_fd()).map_err(|e| format!("size of {device}: {e}"))?;
        let root = std::fs::File::open(ROOT_MOUNT_POINT).map_err(|e| format!("open {ROOT_MOUNT_POINT}: {e}"))?;
        let stat = nix::sys::statfs::fstatfs(&root).map_err(|e| format!("statfs {ROOT_MOUNT_POINT}: {e}"))?;
        let block = stat.block_size() as u64;
        let (current, wanted) = (stat.blocks(), bytes / block.max(1));
        if wanted <= current {
            return Ok(None);
        }
        sys::ext4_resize(root.as_fd(), wanted).map_err(|e| format!("resize to {wanted} blocks: {e}"))?;
        Ok(Some(wanted * block))
    })();
    match result {
        Ok(Some(size)) => log!("root file system grown to {} MiB", size >> 20),
        Ok(None) => {}
        Err(e) => log!("root file system not grown: {e}"),
    }
}

/// File status of an O_PATH descriptor.
pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    Ok(nix::sys::stat::fstat(fd.as_raw_fd())?)
}

/// A user as the box's /etc/passwd and /etc/group describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves "" (root), "name", "uid" or "uid:gid" against the root's passwd and group files.
pub fn lookup_user(root: &Root, spec: &str) -> Result<User, String> {
    let passwd = root.read_to_string("/etc/passwd").unwrap_or_default();
    let group = root.read_to_string("/etc/group").unwrap_or_default();
    resolve_user(spec, &passwd, &group)
}

fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
    let spec = if spec.is_empty() { "0" } else { spec };
    // name:password:uid:gid:gecos:home:shell
    let entries: Vec<Vec<&str>> = passwd.lines().map(|l| l.split(':').collect()).filter(|f: &Vec<&str>| f.len() >= 7).collect();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => entries.iter().find(|f| f[2].parse() == Ok(uid)),
        Err(_) => entries.iter().find(|f| f[0] == user_part),
    };
    let (uid, primary_gid, name, home) = match (entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>().map_err(|_| format!("/etc/passwd has a bad uid for {}", f[0]))?,
            f[3].parse::<u32>().map_err(|_| format!("/etc/passwd has a bad gid for {}", f[0]))?,
            Some(f[0]),
            f[5].to_string(),
        ),
        // A numeric uid needs no passwd entry (as in `docker run --user 1234`).
        (None, Ok(uid)) => (uid, uid, None, "/".to_string()),
        (None, Err(_)) => return Err(format!("user {user_part:?} does not exist in the box's /etc/passwd")),
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} does not exist in the box's /etc/group"))?,
        },
    };
    let mut groups = vec![gid];
    if let Some(name) = name {
        for fields in group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4) {
            if fields[3].split(',').any(|member| member == name) {
                if let Ok(g) = fields[2].parse() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(User { uid, gid, groups, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000::/home/tester:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ntester:x:1000:\nwheel:x:10:tester,other\n";

    #[test]
    fn names_ids_and_groups_resolve() {
        assert_eq!(resolve_user("", PASSWD, GROUP).unwrap(), User { uid: 0, gid: 0, groups: vec![0], home: "/root".into() });
        let tester = resolve_user("tester", PASSWD, GROUP).unwrap();
        assert_eq!((tester.uid, tester.gid, tester.groups.clone(), tester.home.as_str()), (1000, 1000, vec![1000, 10], "/home/tester"));
        assert_eq!(resolve_user("1000", PASSWD, GROUP).unwrap().home, "/home/tester");
        let custom = resolve_user("1234:55", PASSWD, GROUP).unwrap();
        assert_eq!((custom.uid, custom.gid), (1234, 55));
        assert_eq!(resolve_user("tester:wheel", PASSWD, GROUP).unwrap().gid, 10);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(resolve_user("nobody-here", PASSWD, GROUP).unwrap_err().contains("does not exist"));
        assert!(resolve_user("tester:nogroup", PASSWD, GROUP).unwrap_err().contains("group"));
    }
}
