//! odu: a CI runner you attach to.
//!
//! The binary `odu` is the coordinator and its faces; `odu-runner` serves one lane. Both are
//! thin `main`s over this library so tests can drive every part in-process.

pub mod cell;
pub mod client;
pub mod runner;
pub mod spool;
pub mod wire;
