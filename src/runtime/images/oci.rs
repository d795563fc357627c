//! The parts of the OCI image format boxlite reads: descriptors, indexes, manifests and the
//! image config's run settings. Parsed from untrusted bytes: sizes are bounded, digests and
//! media types checked by the callers before anything is trusted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::runtime::error::{quoted, Error, Result, MAX_QUOTED_MESSAGE, MAX_QUOTED_NAME};
use crate::runtime::images::store::Digest;

/// The largest manifest, index or config accepted (they are small JSON documents).
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The run settings of an image config (`config` in the OCI image config document).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RunConfig {
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "String::is_empty", deserialize_with = "null_as_default")]
    pub working_dir: String,
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty", deserialize_with = "null_as_default")]
    pub user: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: RunConfig,
}

fn null_as_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub fn parse<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(Error::InvalidImage { what: format!("{what} is {} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit", bytes.len()) });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage { what: format!("{what} is not valid: {e}") })
}

/// A manifest document is an index when its media type says so, or when it has
/// `manifests` and no `layers`.
pub fn is_index(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) => {
            matches!(p.media_type.as_deref(), Some(MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST)) || (p.manifests.is_some() && p.layers.is_none())
        }
        Err(_) => false,
    }
}

/// The linux/amd64 entry of an index (the only platform boxlite runs).
pub fn pick_platform<'a>(index: &'a Index, what: &str) -> Result<&'a Descriptor> {
    let matches = |d: &&Descriptor| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64");
    index
        .manifests
        .iter()
        .find(matches)
        .or_else(|| match index.manifests.as_slice() {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
        .ok_or_else(|| {
            let offered: Vec<String> =
                index.manifests.iter().filter_map(|d| d.platform.as_ref()).map(|p| format!("{}/{}", p.os, p.architecture)).collect();
            // The image lists its platforms: however many, however long, the message stays short.
            Error::InvalidImage {
                what: format!("{what} has no linux/amd64 image (it offers: {})", quoted(&offered.join(", "), MAX_QUOTED_MESSAGE)),
            }
        })
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
}

pub fn layer_compression(media_type: &str) -> Result<LayerCompression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(LayerCompression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(LayerCompression::Gzip),
        other => Err(Error::InvalidImage {
            what: format!("layer media type {:?} is not supported (tar and tar+gzip are; zstd is not yet)", quoted(other, MAX_QUOTED_NAME)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_config_tolerates_nulls_and_missing_fields() {
        let config: ImageConfig =
            parse("config", br#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["sh"],"WorkingDir":"/w"}}"#).unwrap();
        assert_eq!(config.config.cmd, vec!["sh"]);
        assert_eq!(config.config.working_dir, "/w");
        assert!(config.config.env.is_empty());
        let bare: ImageConfig = parse("config", br#"{"architecture":"amd64","os":"linux"}"#).unwrap();
        assert_eq!(bare.config, RunConfig::default());
    }

    #[test]
    fn indexes_resolve_to_linux_amd64() {
        let hex = "a".repeat(64);
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_INDEX}","manifests":[
              {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"sha256:{hex}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
              {{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"sha256:{}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            "b".repeat(64)
        );
        assert!(is_index(doc.as_bytes()));
        let index: Index = parse("index", doc.as_bytes()).unwrap();
        assert_eq!(pick_platform(&index, "x").unwrap().size, 2);
        let arm_only: Index = parse("index", doc.replace("amd64", "s390x").as_bytes()).unwrap();
        assert!(pick_platform(&arm_only, "x").unwrap_err().to_string().contains("linux/arm64"));
    }
}
