//! OCI images: the on-disk cache (`store`), pulls from registries (`pull`), import from
//! OCI layouts (`layout`), the path-safe layer extractor (`unpack`), and the per-image base
//! disk every box of that image shares (`disk`).

pub mod disk;
pub mod layout;
pub mod oci;
pub mod pull;
pub mod store;
pub mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::error::{quoted, Error, Result, MAX_QUOTED_NAME};
use oci::{Manifest, RunConfig};
use store::{Digest, Store};

/// A cached image.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The normalised reference it is cached under (`registry/repository:tag`).
    pub reference: String,
    pub manifest_digest: Digest,
    /// Entrypoint, Cmd, Env, WorkingDir and User: the defaults of its boxes' executions.
    pub config: RunConfig,
    /// Sum of the layer blob sizes.
    pub size: u64,
}

/// Normalises an image reference (`name[:tag][@digest]`, Docker Hub defaults), or says
/// what is wrong with it.
pub fn normalize_reference(reference: &str) -> Result<String> {
    let parsed: oci_client::Reference = reference.parse().map_err(|e| Error::InvalidOption {
        field: "image",
        reason: format!("{reference:?} is not an image reference ({e}); use name[:tag][@sha256:digest]"),
    })?;
    Ok(parsed.whole())
}

/// The image cache of one runtime home (`<home>/images`).
#[derive(Debug)]
pub struct ImageManager {
    store: Store,
    /// One lock per reference or digest, so that concurrent starts pull and build once.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    registries: pull::RegistryOptions,
    /// Base disks built and pulls made by this manager (metrics; also how tests see
    /// "built once, pulled once").
    disks_built: AtomicU64,
    pulls: AtomicU64,
}

impl ImageManager {
    pub fn open(images_dir: &Path, registries: pull::RegistryOptions) -> Result<ImageManager> {
        Ok(ImageManager {
            store: Store::open(images_dir)?,
            in_flight: Mutex::default(),
            registries,
            disks_built: AtomicU64::new(0),
            pulls: AtomicU64::new(0),
        })
    }

    /// Pulls an image from its registry (fetching only blobs not cached) and caches it
    /// under its reference.
    pub async fn pull(&self, reference: &str, progress: Option<pull::ProgressFn>) -> Result<Image> {
        let normalized = normalize_reference(reference)?;
        let pulled = pull::pull(&self.store, &self.registries, &normalized, progress).await?;
        self.pulls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(image = %normalized, manifest = %pulled.manifest, blobs_fetched = pulled.blobs_fetched, "pulled");
        self.store.tag(&normalized, &pulled.manifest)?;
        self.load(&normalized, &pulled.manifest)
    }

    /// How many pulls this manager has made.
    pub fn pulls(&self) -> u64 {
        self.pulls.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Imports the image tagged `tag` (or the only one) from an OCI layout directory and
    /// caches it under `name`.
    pub fn import_layout(&self, dir: &Path, tag: Option<&str>, name: &str) -> Result<Image> {
        let reference = normalize_reference(name)?;
        let digest = layout::import(&self.store, dir, tag)?;
        self.store.tag(&reference, &digest)?;
        self.load(&reference, &digest)
    }

    /// Imports an image from an archive (an OCI layout tar, or a `docker save` tar) and
    /// caches it under `name`.
    pub fn import_archive(&self, archive: &Path, tag: Option<&str>, name: &str) -> Result<Image> {
        let reference = normalize_reference(name)?;
        let digest = layout::import_archive(&self.store, archive, tag)?;
        self.store.tag(&reference, &digest)?;
        self.load(&reference, &digest)
    }

    /// The cached image for a reference, if any.
    pub fn get(&self, reference: &str) -> Result<Option<Image>> {
        let reference = normalize_reference(reference)?;
        match self.store.resolve(&reference)? {
            Some(digest) => self.load(&reference, &digest).map(Some),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<Image>> {
        self.store.list()?.into_iter().map(|(reference, digest)| self.load(&reference, &digest)).collect()
    }

    /// Forgets a reference (blobs stay until `gc`). Whether boxes still use it is the
    /// runtime's check (see `BoxliteRuntime::remove_image`).
    pub fn untag(&self, reference: &str) -> Result<()> {
        let reference = normalize_reference(reference)?;
        if self.store.untag(&reference)? {
            Ok(())
        } else {
            Err(Error::NotFound { what: format!("image {reference}") })
        }
    }

    /// Deletes blobs and base disks that no cached reference needs. Returns how many files
    /// went.
    pub fn gc(&self) -> Result<usize> {
        let mut keep = std::collections::HashSet::new();
        let mut keep_disks = std::collections::HashSet::new();
        for (_, digest) in self.store.list()? {
            let manifest: Manifest = oci::parse("manifest", &self.store.read_blob(&digest)?)?;
            keep.insert(manifest.config.digest.clone());
            keep.extend(manifest.layers.iter().map(|l| l.digest.clone()));
            keep_disks.insert(self.store.disk_path(&digest));
            keep.insert(digest);
        }
        let mut removed = 0;
        for blob in self.store.blobs()? {
            if !keep.contains(&blob) {
                self.store.remove_blob(&blob)?;
                removed += 1;
            }
        }
        let disks_dir = self.store.disks_dir();
        for entry in std::fs::read_dir(&disks_dir).map_err(|e| Error::io(format!("list {}", disks_dir.display()), e))?.flatten() {
            if !keep_disks.contains(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The image for `reference`: from the cache, else pulled. Concurrent callers for one
    /// reference wait for a single pull.
    pub async fn ensure(&self, reference: &str) -> Result<Image> {
        let normalized = normalize_reference(reference)?;
        let lock = self.lock_for(&normalized);
        let _guard = lock.lock().await;
        match self.get(&normalized)? {
            Some(image) => Ok(image),
            None => self.pull(&normalized, None).await,
        }
    }

    /// The image's base disk, built once however many boxes start at the same time.
    pub async fn base_disk(&self, image: &Image) -> Result<PathBuf> {
        let lock = self.lock_for(image.manifest_digest.as_str());
        let _guard = lock.lock().await;
        let cached = self.store.disk_path(&image.manifest_digest);
        if cached.is_file() {
            return Ok(cached);
        }
        let store = self.store.clone();
        let digest = image.manifest_digest.clone();
        let (path, report) = tokio::task::spawn_blocking(move || disk::build_base(&store, &digest))
            .await
            .map_err(|e| Error::io("building the image disk", std::io::Error::other(e.to_string())))??;
        self.disks_built.fetch_add(1, Ordering::Relaxed);
        tracing::info!(image = %image.reference, disk = %path.display(), entries = report.entries, "built the image's base disk");
        for warning in &report.warnings {
            tracing::warn!(image = %image.reference, "{warning}");
        }
        Ok(path)
    }

    /// How many base disks this manager has built.
    pub fn disks_built(&self) -> u64 {
        self.disks_built.load(Ordering::Relaxed)
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.entry(key.to_string()).or_default().clone()
    }

    fn load(&self, reference: &str, digest: &Digest) -> Result<Image> {
        let manifest: Manifest = oci::parse("manifest", &self.store.read_blob(digest)?)?;
        let config: oci::ImageConfig = oci::parse("image config", &self.store.read_blob(&manifest.config.digest)?)?;
        if (!config.os.is_empty() && config.os != "linux") || (!config.architecture.is_empty() && config.architecture != "amd64") {
            return Err(Error::InvalidImage {
                what: format!(
                    "{reference} is a {}/{} image; boxes run linux/amd64",
                    quoted(&config.os, MAX_QUOTED_NAME),
                    quoted(&config.architecture, MAX_QUOTED_NAME)
                ),
            });
        }
        Ok(Image {
            reference: reference.to_string(),
            manifest_digest: digest.clone(),
            config: config.config,
            size: manifest.layers.iter().map(|l| l.size).sum(),
        })
    }
}
