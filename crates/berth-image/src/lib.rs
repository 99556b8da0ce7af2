//! berth's image store: OCI images unpacked into a content-addressed layer store, to be
//! composed per container with overlayfs.
//!
//! Start at [`ImageStore`]: [`ImageStore::import`] loads an OCI-layout or docker-archive
//! tarball, [`ImageStore::list`] and [`ImageStore::remove`] are `berth image ls` and `rm`, and
//! [`ImageStore::image_config`] and [`ImageStore::layer_dirs`] are what the node agent needs
//! to start a container. Images are found by [`reference`]s normalized the way Kubernetes
//! matches a pod's `image:` field.
//!
//! Modules:
//! - [`store`]: the on-disk layout, the index of references, garbage collection.
//! - `archive`: the two archive formats, staged and digest-checked.
//! - [`unpack`]: one layer into one directory, whiteouts, and the escape checks.
//! - [`reference`]: image reference parsing and normalization.
//! - [`pack`]: an image made from one program on this machine (`berth image pack`).
//! - [`error`]: the crate's error type.

pub mod error;
pub mod pack;
pub mod reference;
pub mod store;
pub mod unpack;

mod archive;

pub use error::{Error, Result};
pub use reference::{Reference, normalize};
pub use store::{ImageRecord, ImageStore, ImageSummary, ImportedImage, ResolvedImage};
pub use unpack::Limits;

/// The OCI image types the API returns (`ImageConfiguration` and friends).
pub use oci_spec::image as oci;
