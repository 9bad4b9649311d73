//! odu: a CI runner you attach to.
//!
//! The binary `odu` is the coordinator and its faces; `odu-runner` serves one lane. Both are
//! thin `main`s over this library so tests can drive every part in-process.

pub mod cell;
pub mod cli;
pub mod client;
pub mod clock;
pub mod command;
pub mod coordinator;
pub mod diag;
pub mod error;
pub mod face;
pub mod fan_in;
pub mod hosts;
pub mod lane;
pub mod private;
pub mod runner;
pub mod server;
pub mod start;
pub mod surface;
pub mod tool;
pub mod trail;
pub mod wire;
