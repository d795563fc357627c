//! Volumes: host directories shared into a box with virtio-fs (docs/volumes.md). Checked at
//! create (the host path is an existing directory that overlaps none of the runtime's own
//! files; the guest path is absolute, not `/`, and neither equal to nor nested in another),
//! and turned into the VM spec's shares and the guest's command line at boot.

use std::path::{Component, Path, PathBuf};

use boxlite_protocol::VolumeMount;
use serde::{Deserialize, Serialize};

use crate::runtime::error::{Error, Result};
use crate::runtime::spec::ShareSpec;

/// The most volumes one box may have (each is a virtio device and a server process).
pub const MAX_VOLUMES: usize = 16;
/// The longest guest path (the kernel command line holds them all, escaped: 2048 bytes).
const MAX_GUEST_PATH: usize = 256;

/// A host directory mounted in the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// An existing host directory (resolved to its real path when the box starts).
    pub host_path: PathBuf,
    /// Where the box sees it: an absolute path, not `/`. Created if missing.
    pub guest_path: String,
    /// The box may read but not write it (the host enforces this, not only the guest).
    #[serde(default)]
    pub read_only: bool,
}

impl Volume {
    pub fn new(host_path: impl Into<PathBuf>, guest_path: impl Into<String>, read_only: bool) -> Volume {
        Volume { host_path: host_path.into(), guest_path: guest_path.into(), read_only }
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidOption { field: "volumes", reason }
}

/// Checks a box's volumes. `protected` are the runtime's own directories (its home, which
/// holds the boxes and the image store): a volume may be neither inside one nor contain one.
pub fn validate(volumes: &[Volume], protected: &[PathBuf]) -> Result<()> {
    if volumes.len() > MAX_VOLUMES {
        return Err(invalid(format!("{} volumes asked for; a box may have at most {MAX_VOLUMES}", volumes.len())));
    }
    let mut guest_paths: Vec<PathBuf> = Vec::new();
    for volume in volumes {
        host_dir(&volume.host_path, protected)?;
        let guest = guest_path(&volume.guest_path)?;
        if let Some(other) = guest_paths.iter().find(|p| p.starts_with(&guest) || guest.starts_with(p)) {
            return Err(invalid(format!(
                "guest paths {} and {} overlap: a volume cannot be mounted on or inside another",
                other.display(),
                guest.display()
            )));
        }
        guest_paths.push(guest);
    }
    Ok(())
}

/// The real path of an existing host directory that overlaps no protected directory.
fn host_dir(path: &Path, protected: &[PathBuf]) -> Result<PathBuf> {
    if !path.is_absolute() {
        return Err(invalid(format!("host path {} is not absolute", path.display())));
    }
    let real = std::fs::canonicalize(path).map_err(|e| invalid(format!("host path {}: {e}", path.display())))?;
    if !real.is_dir() {
        return Err(invalid(format!("host path {} is not a directory (a volume shares a directory)", path.display())));
    }
    for own in protected {
        let own = std::fs::canonicalize(own).unwrap_or_else(|_| own.clone());
        if real.starts_with(&own) || own.starts_with(&real) {
            return Err(invalid(format!(
                "host path {} overlaps {}, which holds boxlite's own files (boxes, disks, images); share another directory",
                path.display(),
                own.display()
            )));
        }
    }
    Ok(real)
}

/// The guest path as a normalized absolute path: no `.`, `..`, NUL or empty path, not `/`.
fn guest_path(path: &str) -> Result<PathBuf> {
    if !path.starts_with('/') || path.len() > MAX_GUEST_PATH || path.contains('\0') {
        return Err(invalid(format!("guest path {path:?} must be absolute, at most {MAX_GUEST_PATH} bytes")));
    }
    let mut normal = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => normal.push(name),
            Component::ParentDir | Component::Prefix(_) => return Err(invalid(format!("guest path {path:?} must not contain '..'"))),
        }
    }
    if normal == Path::new("/") {
        return Err(invalid("a volume cannot be mounted on the box's root '/'".into()));
    }
    Ok(normal)
}

/// The VM spec's shares (tags `vol0`, `vol1`, ...) and the guest's mounts, in one order.
pub fn shares(volumes: &[Volume], protected: &[PathBuf]) -> Result<(Vec<ShareSpec>, Vec<VolumeMount>)> {
    validate(volumes, protected)?;
    let mut shares = Vec::new();
    let mut mounts = Vec::new();
    for (index, volume) in volumes.iter().enumerate() {
        let tag = format!("vol{index}");
        let host_path = host_dir(&volume.host_path, protected)?;
        let guest_path = guest_path(&volume.guest_path)?.to_string_lossy().into_owned();
        shares.push(ShareSpec { tag: tag.clone(), host_path, read_only: volume.read_only });
        mounts.push(VolumeMount { tag, guest_path, read_only: volume.read_only });
    }
    Ok((shares, mounts))
}

/// Parses the CLI's `HOST:GUEST[:ro|:rw]`.
pub fn parse_volume_arg(arg: &str) -> std::result::Result<Volume, String> {
    let mut parts: Vec<&str> = arg.split(':').collect();
    let read_only = match parts.last() {
        Some(&"ro") if parts.len() == 3 => true,
        Some(&"rw") if parts.len() == 3 => false,
        _ if parts.len() == 2 => false,
        _ => return Err(format!("{arg:?}: use HOST:GUEST or HOST:GUEST:ro (paths without ':')")),
    };
    parts.truncate(2);
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{arg:?}: use HOST:GUEST or HOST:GUEST:ro"));
    }
    Ok(Volume::new(parts[0], parts[1], read_only))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_volumes_are_refused_with_the_reason() {
        let tmp = std::env::temp_dir().join(format!("boxlite-volumes-{}", std::process::id()));
        let home = tmp.join("home");
        std::fs::create_dir_all(home.join("boxes")).unwrap();
        std::fs::create_dir_all(tmp.join("data")).unwrap();
        std::fs::write(tmp.join("file"), b"x").unwrap();
        let protected = vec![home.clone()];
        let data = tmp.join("data");
        let check = |v: Vec<Volume>| validate(&v, &protected).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(check(vec![Volume::new(&data, "/data", false), Volume::new(&data, "/other", true)]), "");
        assert!(check(vec![Volume::new(tmp.join("missing"), "/d", false)]).contains("No such file"));
        assert!(check(vec![Volume::new(tmp.join("file"), "/d", false)]).contains("not a directory"));
        assert!(check(vec![Volume::new(home.join("boxes"), "/d", false)]).contains("boxlite's own files"));
        assert!(check(vec![Volume::new(&tmp, "/d", false)]).contains("boxlite's own files"));
        assert!(check(vec![Volume::new(&data, "d", false)]).contains("absolute"));
        assert!(check(vec![Volume::new(&data, "/", false)]).contains("root"));
        assert!(check(vec![Volume::new(&data, "/a/../b", false)]).contains(".."));
        assert!(check(vec![Volume::new(&data, "/a", false), Volume::new(&data, "/a/b", false)]).contains("overlap"));
        assert!(check(vec![Volume::new(&data, "/a/", false), Volume::new(&data, "/a", false)]).contains("overlap"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn cli_volume_arguments() {
        assert_eq!(parse_volume_arg("/h:/g").unwrap(), Volume::new("/h", "/g", false));
        assert_eq!(parse_volume_arg("/h:/g:ro").unwrap(), Volume::new("/h", "/g", true));
        assert_eq!(parse_volume_arg("/h:/g:rw").unwrap(), Volume::new("/h", "/g", false));
        assert!(parse_volume_arg("/h").is_err());
        assert!(parse_volume_arg("/h:/g:rx").is_err());
        assert!(parse_volume_arg(":/g").is_err());
    }
}
