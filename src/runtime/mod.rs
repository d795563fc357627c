//! The Rust core of boxlite: engines and VM specs, booting and holding VMs (`vm`), the
//! guest protocol's host side (`agent`, `exec`), the runtime home and its boxes (`home`,
//! `boxes`), OCI images (`images`) and host directories shared into boxes (`volumes`).

pub mod agent;
pub mod boxes;
mod cgroups;
pub mod engine;
pub mod error;
pub mod exec;
pub mod files;
pub mod helpers;
pub mod home;
pub mod images;
pub mod logging;
pub mod network;
pub mod sink;
pub mod spec;
pub(crate) mod sys;
pub mod vm;
pub mod volumes;
