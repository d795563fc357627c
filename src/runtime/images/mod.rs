//! OCI images. So far: assembling a root from layers safely (`unpack`). Pulling, the
//! blob cache and the per-image ext4 disk build on it.

pub mod unpack;
