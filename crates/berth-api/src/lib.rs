//! berth's model of the Kubernetes API, with no HTTP and no storage in it.
//!
//! Start at [`resources`]: the table of every resource berth serves (group, version, kind,
//! plural, scope, verbs, short names, subresources). Everything else is keyed by it:
//! - [`codec`] decodes a request body into the k8s-openapi type and back, finding unknown fields;
//! - [`defaults`] fills in what Kubernetes defaults;
//! - [`validation`] checks an object with Kubernetes' rules, one [`validation::FieldError`] per bad field;
//! - [`patch`] applies JSON, merge and strategic-merge patches;
//! - [`selectors`] parses and matches label and field selectors;
//! - [`tables`] renders `kubectl get` columns;
//! - [`discovery`] and [`openapi`] describe the API to clients.

pub mod codec;
pub mod conversion;
pub mod defaults;
pub mod discovery;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod selectors;
pub mod tables;
pub mod validation;

pub use resources::{ResourceInfo, Scope};
