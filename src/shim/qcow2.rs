//! The two fields of a qcow2 header the jail needs: the backing file (it must be in the jail
//! too) and the virtual size (it bounds the files the VMM may write). The overlay is the
//! library's own file, but its header is still read with bounds checks.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// The backing file name lives in the header cluster; no sane name is longer.
const HEADER_READ_LIMIT: u64 = 64 * 1024;

pub struct Header {
    /// As written in the image: relative names are relative to the image's directory.
    pub backing_file: Option<PathBuf>,
    pub virtual_size: u64,
}

/// The header of `image`, or None when it is not a qcow2 image.
pub fn read_header(image: &Path) -> Result<Option<Header>, String> {
    let file = std::fs::File::open(image).map_err(|e| format!("open {}: {e}", image.display()))?;
    let mut bytes = Vec::new();
    file.take(HEADER_READ_LIMIT).read_to_end(&mut bytes).map_err(|e| format!("read {}: {e}", image.display()))?;
    if !bytes.starts_with(MAGIC) {
        return Ok(None);
    }
    if bytes.len() < 32 {
        return Err(format!("{}: truncated qcow2 header", image.display()));
    }
    let offset = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let size = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    let virtual_size = u64::from_be_bytes(bytes[24..32].try_into().expect("8 bytes"));
    let backing_file = match (offset, size) {
        (0, _) | (_, 0) => None,
        _ => {
            let name = bytes
                .get(offset..offset.saturating_add(size))
                .ok_or_else(|| format!("{}: its backing file name lies outside the header", image.display()))?;
            Some(PathBuf::from(OsStr::from_bytes(name)))
        }
    };
    Ok(Some(Header { backing_file, virtual_size }))
}
