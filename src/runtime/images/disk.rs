//! The base disk of an image: its layers applied in order into a staging root (with the
//! path-safe extractor), then an ext4 image made by `mke2fs -d`. Built once per manifest
//! digest and shared read-only by every box of the image; each box writes to a qcow2
//! overlay on top (`overlay`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::runtime::error::{Error, Result};
use crate::runtime::images::oci::{self, LayerCompression, Manifest};
use crate::runtime::images::store::{tempfile_in, Digest, Store};
use crate::runtime::images::unpack::{Staging, UnpackReport};

/// Free space the base file system gets beyond the image's content: what boxes can write
/// (the file is sparse, so unused space costs nothing).
const HEADROOM_MIB: u64 = 2048;

/// Builds the base disk of `manifest` if it is not cached; returns its path.
pub fn build_base(store: &Store, manifest_digest: &Digest) -> Result<(PathBuf, UnpackReport)> {
    let dest = store.disk_path(manifest_digest);
    if dest.is_file() {
        return Ok((dest, UnpackReport::default()));
    }
    let manifest: Manifest = oci::parse("manifest", &store.read_blob(manifest_digest)?)?;
    let staging_dir = tempfile_in(&store.tmp_dir())?;
    let result = assemble_and_format(store, &manifest, &staging_dir, &dest);
    let _ = std::fs::remove_dir_all(&staging_dir);
    result.map(|report| (dest, report))
}

fn assemble_and_format(store: &Store, manifest: &Manifest, staging_dir: &Path, dest: &Path) -> Result<UnpackReport> {
    let report = assemble(store, manifest, staging_dir)?;
    let size_mib = content_bytes(staging_dir) / (1 << 20) * 5 / 4 + HEADROOM_MIB;
    let tmp = tempfile_in(&store.tmp_dir())?;
    let mut command = Command::new("mke2fs");
    command.args(["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d"]).arg(staging_dir).arg(&tmp).arg(format!("{size_mib}M"));
    run_into(command, &tmp, "e2fsprogs", &format!("mke2fs -d {}", staging_dir.display()))?;
    // Shared by every box of the image, read by each VM's own jailed uid: readable by all,
    // whatever the caller's umask, and written by none.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| Error::io(format!("chmod 444 {}", tmp.display()), e))?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(format!("rename to {}", dest.display()), e))?;
    Ok(report)
}

/// Applies the layers of the manifest `manifest_digest`, in order, into the directory `dir`.
pub fn assemble_rootfs(store: &Store, manifest_digest: &Digest, dir: &Path) -> Result<UnpackReport> {
    let manifest: Manifest = oci::parse("manifest", &store.read_blob(manifest_digest)?)?;
    assemble(store, &manifest, dir)
}

fn assemble(store: &Store, manifest: &Manifest, dir: &Path) -> Result<UnpackReport> {
    let staging = Staging::create(dir)?;
    let mut report = UnpackReport::default();
    for layer in &manifest.layers {
        let path = store.blob_path(&layer.digest);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(format!("open layer {}", path.display()), e))?;
        let reader = std::io::BufReader::new(file);
        let applied = match oci::layer_compression(&layer.media_type)? {
            LayerCompression::None => staging.apply_layer(reader)?,
            LayerCompression::Gzip => staging.apply_layer(flate2::read::GzDecoder::new(reader))?,
        };
        report.entries += applied.entries;
        report.warnings.extend(applied.warnings);
    }
    Ok(report)
}

/// Bytes of file content under `dir` (not following symlinks).
fn content_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => 4096 + content_bytes(&entry.path()),
            Ok(meta) => meta.len().max(4096),
            Err(_) => 0,
        })
        .sum()
}

/// Creates a box's writable disk: a qcow2 overlay whose backing file is the image's base,
/// `size` bytes large if given (the guest grows its file system to fill it).
pub fn overlay(base: &Path, dest: &Path, size: Option<u64>) -> Result<()> {
    if dest.is_file() {
        return Ok(());
    }
    let base_size = std::fs::metadata(base).map_err(|e| Error::io(format!("stat {}", base.display()), e))?.len();
    if let Some(size) = size.filter(|&s| s < base_size) {
        return Err(Error::InvalidOption {
            field: "disk_size_gib",
            reason: format!("{} GiB is smaller than the image's disk ({:.1} GiB)", size >> 30, base_size as f64 / (1u64 << 30) as f64),
        });
    }
    let tmp = dest.with_extension("qcow2.tmp");
    let mut command = Command::new("qemu-img");
    command.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(base).arg(&tmp);
    if let Some(size) = size {
        command.arg(size.to_string());
    }
    run_into(command, &tmp, "qemu-utils", &format!("qemu-img create overlay on {}", base.display()))?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(format!("rename to {}", dest.display()), e))
}

/// Runs a tool that writes `tmp`; on failure removes what it left there and reports its
/// stderr as `what ... failed`, or the package to install when the tool is missing.
fn run_into(mut command: Command, tmp: &Path, package: &str, what: &str) -> Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|e| Error::io(format!("run {program} (install {package})"), e))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::io(
            format!("{what} failed: {}", String::from_utf8_lossy(&output.stderr).trim()),
            std::io::Error::other(format!("{program} failed")),
        ));
    }
    Ok(())
}
