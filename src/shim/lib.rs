//! The parts of boxlite-shim that its helper binaries and the tests share.

pub mod seccomp;
pub mod sys;
