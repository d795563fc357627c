//! Volumes: host directories shared with virtio-fs, mounted where the kernel command line
//! says (`boxlite.volumes=TAG:PATH:MODE,...`, docs/volumes.md). Each mount point is found, or
//! created, inside the box's root with openat2(RESOLVE_IN_ROOT), so a symlink in the image
//! cannot put a volume outside the root; the mount then goes through /proc/self/fd/N of the
//! checked descriptor. A read-only volume is mounted MS_RDONLY, but the host enforces it too:
//! its server refuses every write, whatever the guest remounts.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use boxlite_protocol::{parse_volumes_cmdline_value, VolumeMount, CMDLINE_VOLUMES};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mkdirat, Mode};

use crate::log;
use crate::rootfs::Root;

/// The volumes the command line declares; an unreadable list is logged and means none.
pub fn from_cmdline(cmdline: &str) -> Vec<VolumeMount> {
    let prefix = format!("{CMDLINE_VOLUMES}=");
    let Some(value) = cmdline.split_whitespace().find_map(|w| w.strip_prefix(&prefix)) else { return Vec::new() };
    parse_volumes_cmdline_value(value).unwrap_or_else(|e| {
        log!("volumes: {e}; no volume is mounted");
        Vec::new()
    })
}

/// Mounts every volume inside the root. The first that fails is the error: a box without a
/// volume it was given would show the image's files where the host's were asked for.
pub fn mount_all(root: &Root, volumes: &[VolumeMount]) -> Result<(), String> {
    for volume in volumes {
        mount_one(root, volume).map_err(|e| format!("volume {} on {}: {e}", volume.tag, volume.guest_path))?;
        log!("volume {} on {} ({})", volume.tag, volume.guest_path, if volume.read_only { "read-only" } else { "read-write" });
    }
    Ok(())
}

fn mount_one(root: &Root, volume: &VolumeMount) -> Result<(), String> {
    let target = mount_point(root, &volume.guest_path).map_err(|e| format!("mount point: {e}"))?;
    let flags = if volume.read_only { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    let through = format!("/proc/self/fd/{}", target.as_raw_fd());
    mount(Some(volume.tag.as_str()), through.as_str(), Some("virtiofs"), flags, None::<&str>).map_err(|e| format!("mount -t virtiofs: {e}"))
}

/// The directory at `path` inside the root, created (0755, parents too) where missing.
/// Every step is resolved inside the root (a symlink on the way is followed as if the root
/// were `/`); a component that exists but is no directory is an error.
fn mount_point(root: &Root, path: &str) -> io::Result<OwnedFd> {
    let mut current = String::from("/");
    let mut dir = root.open_in_root("/", libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
    for component in Path::new(path).components() {
        let std::path::Component::Normal(name) = component else { continue };
        let name = name.to_str().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if !current.ends_with('/') {
            current.push('/');
        }
        current.push_str(name);
        let open = |p: &str| root.open_in_root(p, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
        dir = match open(&current) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // One component, relative to the directory already resolved inside the root.
                match mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io::Error::other(format!("mkdir {current}: {e}"))),
                }
                open(&current)?
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{current}: {e}"))),
        };
    }
    Ok(dir)
}
