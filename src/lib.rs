//! odu: a CI runner you attach to.
//!
//! The binary `odu` is the coordinator and its faces; `odu-runner` serves one lane. Both are
//! thin `main`s over this library so tests can drive every part in-process.
//!
//! The reference is built with private items (`cargo doc --document-private-items`, a node of
//! odu's own CI): it documents an application's internals, so links to private items are meant.

#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod client;
pub mod clock;
pub mod command;
pub mod diag;
pub mod error;
pub mod hosts;
pub mod lane;
pub mod link;
pub mod private;
pub mod runner;
pub mod server;
pub mod tool;
pub mod trail;
pub mod version;
