//! Importing an image from an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/...`), e.g. one written by `skopeo copy ... oci:DIR` or by
//! scripts/build-test-images.sh. Every blob is verified as it enters the cache.

use std::path::Path;

use crate::runtime::error::{Error, Result};
use crate::runtime::images::oci::{self, Descriptor, Index, Manifest, MAX_DOCUMENT_BYTES};
use crate::runtime::images::store::{Digest, Store};

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
    let file = std::fs::File::open(&path).map_err(|e| Error::InvalidImage { what: format!("blob {} is missing from the layout ({e})", descriptor.digest) })?;
    store.put_blob_from(&descriptor.digest, descriptor.size, file)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_err(|e| Error::InvalidImage { what: format!("{}: {e}", path.display()) })?.len();
    if len > MAX_DOCUMENT_BYTES {
        return Err(Error::InvalidImage { what: format!("{} is {len} bytes", path.display()) });
    }
    std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))
}
