//! Pulling images from registries with oci-client: anonymous, basic or bearer auth per
//! registry; plain HTTP only for registries marked insecure; indexes resolved to
//! linux/amd64; every document and blob verified (digest and size) before it is named in
//! the cache; cached blobs not fetched again; layers fetched concurrently, with progress.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::runtime::error::{quoted, Error, PullErrorKind, Result, MAX_QUOTED_MESSAGE};
use crate::runtime::images::oci::{self, Descriptor, Index, Manifest, MAX_DOCUMENT_BYTES};
use crate::runtime::images::store::{Digest, Store};

/// Layers fetched at once.
const CONCURRENT_LAYERS: usize = 3;

const ACCEPTED_MANIFESTS: &[&str] = &[oci::MEDIA_OCI_MANIFEST, oci::MEDIA_OCI_INDEX, oci::MEDIA_DOCKER_MANIFEST, oci::MEDIA_DOCKER_LIST];

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <password>)"),
            Credentials::Bearer(_) => write!(f, "Bearer(<token>)"),
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) that may be spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials by registry (`host[:port]`); others are accessed anonymously.
    pub credentials: HashMap<String, Credentials>,
}

/// Progress of one blob of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub digest: Digest,
    pub done: u64,
    pub total: u64,
}

/// Called as blobs arrive; returning `false` cancels the pull.
pub type ProgressFn = Arc<dyn Fn(&PullProgress) -> bool + Send + Sync>;

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub manifest: Digest,
    /// Blobs fetched from the registry (cached ones are not).
    pub blobs_fetched: usize,
}

/// Pulls `reference` into the store (not tagging it; the caller does).
pub async fn pull(store: &Store, options: &RegistryOptions, reference: &str, progress: Option<ProgressFn>) -> Result<Pulled> {
    let image: Reference = reference
        .parse()
        .map_err(|e| Error::InvalidOption { field: "image", reason: format!("{reference:?} is not an image reference ({e})") })?;
    let registry = image.resolve_registry().to_string();
    let fail = |kind: PullErrorKind, reason: String| Error::Pull { reference: image.whole(), kind, reason };
    let client = Client::new(ClientConfig { protocol: ClientProtocol::HttpsExcept(options.insecure.clone()), ..Default::default() });
    let auth = match options.credentials.get(&registry) {
        Some(Credentials::Basic { username, password }) => RegistryAuth::Basic(username.clone(), password.clone()),
        Some(Credentials::Bearer(token)) => RegistryAuth::Bearer(token.clone()),
        None => RegistryAuth::Anonymous,
    };
    let classify = |e: OciDistributionError| classify(&registry, options, e);

    // The manifest, through an index if the reference names one.
    let (bytes, _) = client.pull_manifest_raw(&image, &auth, ACCEPTED_MANIFESTS).await.map_err(|e| {
        let (kind, reason) = classify(e);
        fail(kind, reason)
    })?;
    let mut digest = verified_document(&bytes, image.digest(), &image.whole())?;
    let mut fetched = 0;
    store.put_blob(&digest, bytes.len() as u64, &bytes)?;
    let mut manifest_bytes = bytes;
    if oci::is_index(&manifest_bytes) {
        let index: Index = oci::parse("image index", &manifest_bytes)?;
        let chosen: Descriptor = oci::pick_platform(&index, &image.whole())?.clone();
        let by_digest = Reference::with_digest(image.registry().to_string(), image.repository().to_string(), chosen.digest.to_string());
        let (bytes, _) = client.pull_manifest_raw(&by_digest, &auth, ACCEPTED_MANIFESTS).await.map_err(|e| {
            let (kind, reason) = classify(e);
            fail(kind, reason)
        })?;
        if bytes.len() as u64 != chosen.size {
            return Err(Error::InvalidImage {
                what: format!("manifest {} is {} bytes, its descriptor says {}", chosen.digest, bytes.len(), chosen.size),
            });
        }
        digest = verified_document(&bytes, Some(chosen.digest.as_str()), &image.whole())?;
        store.put_blob(&digest, bytes.len() as u64, &bytes)?;
        manifest_bytes = bytes;
        fetched += 1;
    }
    let manifest: Manifest = oci::parse("manifest", &manifest_bytes)?;
    if manifest.config.size > MAX_DOCUMENT_BYTES {
        return Err(Error::InvalidImage { what: format!("config {} claims {} bytes", manifest.config.digest, manifest.config.size) });
    }
    for layer in &manifest.layers {
        oci::layer_compression(&layer.media_type)?;
    }

    // Config and layers not cached yet, a few at a time.
    let missing: Vec<&Descriptor> =
        std::iter::once(&manifest.config).chain(&manifest.layers).filter(|d| !store.has_blob(&d.digest)).collect();
    fetched += missing.len();
    futures::stream::iter(missing)
        .map(|descriptor| fetch_blob(&client, &image, store, descriptor, progress.clone()))
        .buffer_unordered(CONCURRENT_LAYERS)
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e| match e {
            FetchError::Registry(e) => {
                let (kind, reason) = classify(e);
                fail(kind, reason)
            }
            FetchError::Local(e) => e,
        })?;
    Ok(Pulled { manifest: digest, blobs_fetched: fetched })
}

enum FetchError {
    Registry(OciDistributionError),
    Local(Error),
}

async fn fetch_blob(
    client: &Client,
    image: &Reference,
    store: &Store,
    descriptor: &Descriptor,
    progress: Option<ProgressFn>,
) -> std::result::Result<(), FetchError> {
    let mut stream = client.pull_blob_stream(image, descriptor.digest.as_str()).await.map_err(FetchError::Registry)?;
    let mut writer = store.begin_blob(&descriptor.digest, descriptor.size).map_err(FetchError::Local)?;
    let mut done = 0u64;
    while let Some(chunk) = stream.stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Local(Error::io(format!("downloading {}", descriptor.digest), e)))?;
        // Written (hashed and counted) on the async thread: chunks are small and the file is
        // local; the writer stops at the descriptor's size whatever the registry sends.
        writer.write(&chunk).map_err(FetchError::Local)?;
        done += chunk.len() as u64;
        if let Some(report) = &progress {
            if !report(&PullProgress { digest: descriptor.digest.clone(), done, total: descriptor.size }) {
                return Err(FetchError::Local(Error::Pull {
                    reference: image.whole(),
                    kind: PullErrorKind::Cancelled,
                    reason: "cancelled by the progress callback".into(),
                }));
            }
        }
    }
    writer.finish().map_err(FetchError::Local)
}

/// The digest of a fetched document, checked against the one the reference pinned.
fn verified_document(bytes: &[u8], expected: Option<&str>, what: &str) -> Result<Digest> {
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(Error::InvalidImage { what: format!("the manifest of {what} is {} bytes", bytes.len()) });
    }
    let actual = Digest::of(bytes);
    if let Some(expected) = expected {
        if actual.as_str() != expected {
            return Err(Error::InvalidImage { what: format!("the manifest of {what} has digest {actual}, not the {expected} asked for") });
        }
    }
    Ok(actual)
}

/// Turns a registry client error into a kind and a message that says what to do.
fn classify(registry: &str, options: &RegistryOptions, error: OciDistributionError) -> (PullErrorKind, String) {
    // The registry's words (an error body can be any size): quoted at a bounded length.
    let text = quoted(&error.to_string(), MAX_QUOTED_MESSAGE);
    let chain = format!("{error:?}");
    match &error {
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => (
            PullErrorKind::Unauthorized,
            format!("{registry} refused the credentials ({text}); check the username and password given for {registry}"),
        ),
        OciDistributionError::ImageManifestNotFoundError(_) => (PullErrorKind::NotFound, format!("{registry} has no such image ({text})")),
        OciDistributionError::ServerError { code: 404, .. } => (PullErrorKind::NotFound, format!("{registry} has no such image ({text})")),
        OciDistributionError::ServerError { code: 401 | 403, .. } => (
            PullErrorKind::Unauthorized,
            format!("{registry} asks for credentials or refused them ({text}); give credentials for {registry}"),
        ),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| matches!(format!("{:?}", e.code).as_str(), "ManifestUnknown" | "NameUnknown" | "BlobUnknown")) =>
        {
            (PullErrorKind::NotFound, format!("{registry} has no such image ({text})"))
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| matches!(format!("{:?}", e.code).as_str(), "Unauthorized" | "Denied")) =>
        {
            (PullErrorKind::Unauthorized, format!("{registry} refused access ({text}); check the credentials for {registry}"))
        }
        _ if !options.insecure.iter().any(|r| r == registry)
            && (chain.contains("InvalidContentType") || chain.contains("corrupt message") || chain.contains("wrong version number")) =>
        {
            (
                PullErrorKind::InsecureRegistry,
                format!(
                    "{registry} answered plain HTTP to an HTTPS request; if it is a plain-HTTP registry you trust, mark it insecure (RuntimeOptions::insecure_registries)"
                ),
            )
        }
        _ if chain.contains("ConnectError") || chain.contains("ConnectionRefused") => {
            (PullErrorKind::Other, format!("cannot connect to {registry}: {text}"))
        }
        _ => (PullErrorKind::Other, format!("{text} ({})", quoted(&chain, MAX_QUOTED_MESSAGE))),
    }
}
