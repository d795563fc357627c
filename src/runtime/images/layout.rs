//! Importing images without a registry: from an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/...`, e.g. written by `skopeo copy ... oci:DIR` or by
//! scripts/build-test-images.sh), or from an archive: an OCI layout in a tar, or a
//! `docker save` tar (`manifest.json` + layer tars). Every blob is verified as it enters
//! the cache, and archives are unpacked with the same path-safe extractor as layers.

use std::path::Path;

use crate::runtime::error::{quoted, Error, Result, MAX_QUOTED_NAME};
use std::io::Read;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::runtime::images::oci::{self, Descriptor, Index, Manifest, MAX_DOCUMENT_BYTES};
use crate::runtime::images::store::{tempfile_in, Digest, Store};
use crate::runtime::images::unpack::Staging;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Copies the image tagged `tag` (or the layout's only image) into the store and returns
/// its manifest digest. Nothing is tagged; the caller names the image.
pub fn import(store: &Store, dir: &Path, tag: Option<&str>) -> Result<Digest> {
    let layout = std::fs::read_to_string(dir.join("oci-layout"))
        .map_err(|e| Error::InvalidImage { what: format!("{} is not an OCI image layout (oci-layout: {e})", dir.display()) })?;
    if !layout.contains("\"imageLayoutVersion\"") {
        return Err(Error::InvalidImage { what: format!("{}/oci-layout has no imageLayoutVersion", dir.display()) });
    }
    let index_bytes = read_bounded(&dir.join("index.json"))?;
    let index: Index = oci::parse("index.json", &index_bytes)?;
    let chosen = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
            .ok_or_else(|| Error::NotFound { what: format!("tag {tag:?} in the layout {}", dir.display()) })?,
        None => match index.manifests.as_slice() {
            [only] => only,
            [] => return Err(Error::InvalidImage { what: format!("the layout {} holds no image", dir.display()) }),
            _ => return Err(Error::InvalidImage { what: format!("the layout {} holds several images: name a tag", dir.display()) }),
        },
    };
    let manifest_digest = resolve_manifest(store, dir, chosen)?;
    let manifest: Manifest = oci::parse("manifest", &store.read_blob(&manifest_digest)?)?;
    copy_blob(store, dir, &manifest.config)?;
    for layer in &manifest.layers {
        oci::layer_compression(&layer.media_type)?;
        copy_blob(store, dir, layer)?;
    }
    Ok(manifest_digest)
}

/// Follows a descriptor through nested indexes to the linux/amd64 manifest, copying each
/// document into the store.
fn resolve_manifest(store: &Store, dir: &Path, descriptor: &Descriptor) -> Result<Digest> {
    let mut current = descriptor.clone();
    for _ in 0..4 {
        if current.size > MAX_DOCUMENT_BYTES {
            return Err(Error::InvalidImage { what: format!("manifest {} claims {} bytes", current.digest, current.size) });
        }
        copy_blob(store, dir, &current)?;
        let bytes = store.read_blob(&current.digest)?;
        if !oci::is_index(&bytes) {
            return Ok(current.digest);
        }
        let index: Index = oci::parse("image index", &bytes)?;
        current = oci::pick_platform(&index, &format!("index {}", current.digest))?.clone();
    }
    Err(Error::InvalidImage { what: "image indexes nest more than 4 deep".into() })
}

fn copy_blob(store: &Store, dir: &Path, descriptor: &Descriptor) -> Result<()> {
    let path = dir.join("blobs/sha256").join(descriptor.digest.hex());
    let file = std::fs::File::open(&path)
        .map_err(|e| Error::InvalidImage { what: format!("blob {} is missing from the layout ({e})", descriptor.digest) })?;
    store.put_blob_from(&descriptor.digest, descriptor.size, file)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_err(|e| Error::InvalidImage { what: format!("{}: {e}", path.display()) })?.len();
    if len > MAX_DOCUMENT_BYTES {
        return Err(Error::InvalidImage { what: format!("{} is {len} bytes", path.display()) });
    }
    std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// Imports from an archive: an OCI layout in a tar (`oci-layout` at its top) or a
/// `docker save` tar (`manifest.json`). `tag` picks the image (a layout's ref name, or one
/// of the docker archive's RepoTags); without it the archive must hold one image.
pub fn import_archive(store: &Store, archive: &Path, tag: Option<&str>) -> Result<Digest> {
    let file = std::fs::File::open(archive).map_err(|e| Error::io(format!("open {}", archive.display()), e))?;
    let dir = tempfile_in(&store.tmp_dir())?;
    let result = Staging::create(&dir).and_then(|staging| staging.apply_layer(std::io::BufReader::new(file))).and_then(|_| {
        if dir.join("oci-layout").is_file() {
            import(store, &dir, tag)
        } else if dir.join("manifest.json").is_file() {
            import_docker(store, &dir, tag)
        } else {
            Err(Error::InvalidImage {
                what: format!("{} is neither an OCI archive (no oci-layout) nor a docker archive (no manifest.json)", archive.display()),
            })
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A `docker save` directory, turned into an OCI manifest over the same blobs.
fn import_docker(store: &Store, dir: &Path, tag: Option<&str>) -> Result<Digest> {
    let entries: Vec<DockerEntry> = oci::parse("manifest.json", &read_bounded(&dir.join("manifest.json"))?)?;
    let entry = match (tag, entries.as_slice()) {
        (Some(tag), _) => entries
            .iter()
            .find(|e| e.repo_tags.iter().flatten().any(|t| t == tag || t.rsplit_once(':').is_some_and(|(_, t)| t == tag)))
            .ok_or_else(|| Error::NotFound { what: format!("tag {tag:?} in the docker archive") })?,
        (None, [only]) => only,
        (None, _) => return Err(Error::InvalidImage { what: "the docker archive holds several images: name a tag".into() }),
    };
    let member = |name: &str| -> Result<std::path::PathBuf> {
        if name.split('/').any(|part| part == "..") || name.starts_with('/') {
            return Err(Error::InvalidImage {
                what: format!("manifest.json names {:?}, outside the archive", quoted(name, MAX_QUOTED_NAME)),
            });
        }
        Ok(dir.join(name))
    };
    let config_bytes = read_bounded(&member(&entry.config)?)?;
    let config_digest = Digest::of(&config_bytes);
    store.put_blob(&config_digest, config_bytes.len() as u64, &config_bytes)?;
    let mut layers = Vec::new();
    for name in &entry.layers {
        let path = member(name)?;
        let (digest, size, gzip) = hash_file(&path)?;
        let file = std::fs::File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        store.put_blob_from(&digest, size, file)?;
        let media_type = if gzip { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" };
        layers.push(serde_json::json!({ "mediaType": media_type, "digest": digest.as_str(), "size": size }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.as_str(), "size": config_bytes.len() },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).expect("a manifest always serializes");
    let digest = Digest::of(&bytes);
    store.put_blob(&digest, bytes.len() as u64, &bytes)?;
    Ok(digest)
}

/// SHA-256, size, and whether the file is gzip (by its magic bytes).
fn hash_file(path: &Path) -> Result<(Digest, u64, bool)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut size, mut magic) = (0u64, Vec::new());
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        if magic.len() < 2 {
            magic.extend_from_slice(&buf[..n.min(2 - magic.len())]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest = Digest::parse(&format!("sha256:{:x}", hasher.finalize()))?;
    Ok((digest, size, magic == [0x1f, 0x8b]))
}
