//! The image cache on disk: content-addressed blobs and a name index.
//!
//! ```text
//! images/blobs/sha256/<hex>   every manifest, config and layer, by digest
//! images/index.json           {"images": {"<reference>": {"manifest": "sha256:<hex>"}}}
//! images/disks/<hex>.ext4     the base disk built from a manifest (see `disk`)
//! images/tmp/                 blobs being written
//! ```
//!
//! Every write is a temp file in images/tmp + fsync + rename, and a blob only gets its
//! name after its SHA-256 and size were checked, so a crash never leaves a half blob that
//! looks valid.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::runtime::error::{Error, Result};

/// A blob digest, `sha256:<64 hex digits>` (the only algorithm accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(text: &str) -> Result<Digest> {
        let hex = text.strip_prefix("sha256:").ok_or_else(|| bad_digest(text))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad_digest(text));
        }
        Ok(Digest(text.to_string()))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{:x}", Sha256::digest(bytes)))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(text: String) -> Result<Digest> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

fn bad_digest(text: &str) -> Error {
    Error::InvalidImage { what: format!("{text:?} is not a sha256:<64 lowercase hex> digest") }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Index {
    images: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct IndexEntry {
    manifest: Digest,
}

/// The on-disk cache. Not locked by itself: the runtime's home lock makes it single-writer.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(images_dir: &Path) -> Result<Store> {
        for sub in ["blobs/sha256", "disks", "tmp"] {
            let dir = images_dir.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        // Leftovers of writes a crash interrupted; they never had a name.
        if let Ok(entries) = std::fs::read_dir(images_dir.join("tmp")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Store { dir: images_dir.to_path_buf() })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    pub fn disks_dir(&self) -> PathBuf {
        self.dir.join("disks")
    }

    pub fn disk_path(&self, manifest: &Digest) -> PathBuf {
        self.disks_dir().join(format!("{}.ext4", manifest.hex()))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores `bytes` as the blob `digest` after checking both digest and size.
    pub fn put_blob(&self, digest: &Digest, size: u64, bytes: &[u8]) -> Result<()> {
        self.put_blob_from(digest, size, bytes)
    }

    /// Streams a blob in, checking its digest and size before it gets its name. A blob that
    /// is already there is not written again.
    pub fn put_blob_from(&self, digest: &Digest, size: u64, mut from: impl Read) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut writer = self.begin_blob(digest, size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = from.read(&mut buf).map_err(|e| Error::io(format!("reading blob {digest}"), e))?;
            if n == 0 {
                return writer.finish();
            }
            writer.write(&buf[..n])?;
        }
    }

    /// Starts writing a blob piece by piece (e.g. from a network stream).
    pub fn begin_blob(&self, digest: &Digest, size: u64) -> Result<BlobWriter> {
        let tmp = tempfile_in(&self.tmp_dir())?;
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dest: self.blob_path(digest),
            digest: digest.clone(),
            size,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))
    }

    /// The manifest digest a reference points to, if cached.
    pub fn resolve(&self, reference: &str) -> Result<Option<Digest>> {
        Ok(self.load_index()?.images.get(reference).map(|e| e.manifest.clone()))
    }

    pub fn tag(&self, reference: &str, manifest: &Digest) -> Result<()> {
        let mut index = self.load_index()?;
        index.images.insert(reference.to_string(), IndexEntry { manifest: manifest.clone() });
        self.save_index(&index)
    }

    pub fn untag(&self, reference: &str) -> Result<bool> {
        let mut index = self.load_index()?;
        let removed = index.images.remove(reference).is_some();
        if removed {
            self.save_index(&index)?;
        }
        Ok(removed)
    }

    /// (reference, manifest digest) of every cached image.
    pub fn list(&self) -> Result<Vec<(String, Digest)>> {
        Ok(self.load_index()?.images.into_iter().map(|(name, entry)| (name, entry.manifest)).collect())
    }

    /// Every blob digest in the cache.
    pub fn blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.dir.join("blobs/sha256");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        Ok(entries.flatten().filter_map(|e| Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())).ok()).collect())
    }

    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(format!("remove {}", path.display()), e)),
            _ => Ok(()),
        }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn load_index(&self) -> Result<Index> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::InvalidImage {
                what: format!("{} is corrupt ({e}); remove it to start a fresh image index", path.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn save_index(&self, index: &Index) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index).expect("the index always serializes");
        write_atomic(&self.tmp_dir(), &self.index_path(), &bytes)
    }
}

/// A blob being written: hashed and counted as it comes, named only by `finish` after both
/// match its descriptor. Dropped unfinished, it leaves nothing behind.
pub struct BlobWriter {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
    digest: Digest,
    size: u64,
    written: u64,
    hasher: Sha256,
}

impl BlobWriter {
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.written += chunk.len() as u64;
        if self.written > self.size {
            return Err(Error::InvalidImage { what: format!("blob {} is larger than its descriptor's {} bytes", self.digest, self.size) });
        }
        self.hasher.update(chunk);
        let file = self.file.as_mut().expect("open until finish");
        file.write_all(chunk).map_err(|e| Error::io(format!("write {}", self.tmp.display()), e))
    }

    pub fn finish(mut self) -> Result<()> {
        let file = self.file.take().expect("open until finish");
        file.sync_all().map_err(|e| Error::io(format!("fsync {}", self.tmp.display()), e))?;
        drop(file);
        let actual = Digest(format!("sha256:{:x}", std::mem::take(&mut self.hasher).finalize()));
        if self.written != self.size || actual != self.digest {
            return Err(Error::InvalidImage {
                what: format!(
                    "blob {} failed verification: got {} bytes with digest {actual}, expected {} bytes",
                    self.digest, self.written, self.size
                ),
            });
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(format!("rename to {}", self.dest.display()), e))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished or failed: the temp file goes (after a successful rename it is gone).
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A fresh, unused path in `dir`.
pub(crate) fn tempfile_in(dir: &Path) -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(dir.join(format!("{}-{n}", std::process::id())))
}

/// Writes `bytes` to `dest` through a temp file in `tmp_dir`: fsync, rename.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tempfile_in(tmp_dir)?;
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("write {}", dest.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("boxlite-store-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn a_blob_is_named_only_after_verification() {
        let (store, dir) = store();
        let good = Digest::of(b"layer");
        store.put_blob(&good, 5, b"layer").unwrap();
        assert_eq!(store.read_blob(&good).unwrap(), b"layer");

        let claimed = Digest::of(b"something else");
        let error = store.put_blob(&claimed, 5, b"layer").unwrap_err().to_string();
        assert!(error.contains("failed verification"), "{error}");
        assert!(!store.has_blob(&claimed));
        assert!(store.put_blob(&Digest::of(b"layer!"), 5, b"layer!").unwrap_err().to_string().contains("larger"));
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "no temp files left");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn digests_are_checked_for_shape() {
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn the_index_maps_names_to_manifests() {
        let (store, dir) = store();
        let digest = Digest::of(b"manifest");
        store.tag("localhost/busybox:1", &digest).unwrap();
        assert_eq!(store.resolve("localhost/busybox:1").unwrap(), Some(digest.clone()));
        assert_eq!(store.list().unwrap(), vec![("localhost/busybox:1".to_string(), digest)]);
        assert!(store.untag("localhost/busybox:1").unwrap());
        assert_eq!(store.resolve("localhost/busybox:1").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
