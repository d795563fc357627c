//! The VM spec the shim runs, its events and its protections record: defined in the
//! `boxlite-vmspec` crate, which the shim depends on alone.

pub use boxlite_vmspec::spec::*;
