# Writing OCI image layouts from shell (sourced by scripts/build-*-image*.sh).
# Usage: oci_begin DIR; oci_add_layer ROOTFS_DIR ...; oci_finish CONFIG_JSON_RUN_PART TAG
# The layers are reproducible gzip tars (sorted, owner 0, mtime 0).

oci_begin() {
  OCI_DIR=$1
  OCI_LAYERS=""
  OCI_DIFF_IDS=""
  rm -rf "$OCI_DIR"
  mkdir -p "$OCI_DIR/blobs/sha256"
}

# Stores stdin as a blob; prints "<digest> <size>".
oci_put_blob() {
  local tmp="$OCI_DIR/blob.tmp" hex size
  cat > "$tmp"
  hex=$(sha256sum "$tmp" | cut -d' ' -f1)
  size=$(stat -c %s "$tmp")
  mv "$tmp" "$OCI_DIR/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

oci_tar() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf - .; }

# Adds the contents of a directory as the next gzip layer.
oci_add_layer() {
  local digest size diff
  read -r digest size < <(oci_tar "$1" | gzip -n | oci_put_blob)
  # The diff id is the digest of the uncompressed tar: read it back from the blob.
  diff=$(gzip -dc "$OCI_DIR/blobs/sha256/${digest#sha256:}" | sha256sum | cut -d' ' -f1)
  OCI_LAYERS="$OCI_LAYERS${OCI_LAYERS:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}"
  OCI_DIFF_IDS="$OCI_DIFF_IDS${OCI_DIFF_IDS:+,}\"sha256:$diff\""
}

# Writes config, manifest, index.json and oci-layout. $1: the config's "config" object
# (Env, Cmd, WorkingDir, ...) as JSON; $2: the tag.
oci_finish() {
  local config_digest config_size manifest_digest manifest_size
  read -r config_digest config_size < <(printf '%s' "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":$1,\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$OCI_DIFF_IDS]}}" | oci_put_blob)
  read -r manifest_digest manifest_size < <(printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$config_digest\",\"size\":$config_size},\"layers\":[$OCI_LAYERS]}" | oci_put_blob)
  printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$OCI_DIR/oci-layout"
  printf '%s' "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$manifest_digest\",\"size\":$manifest_size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$2\"}}]}" > "$OCI_DIR/index.json"
}
