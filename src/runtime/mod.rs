//! The Rust core of boxlite. For now: booting a VM from a spec under either engine,
//! talking to its agent, and running processes in it. Boxes, images and the runtime home build on this.

pub mod agent;
pub mod boxes;
pub mod engine;
pub mod error;
pub mod exec;
pub mod helpers;
pub mod home;
pub mod images;
pub mod spec;
pub mod vm;
