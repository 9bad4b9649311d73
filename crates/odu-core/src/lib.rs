//! odu's pure model.
//!
//! Everything here is a function of its inputs: no tokio, no files, no processes and no clock.
//! Time arrives inside events as milliseconds since the Unix epoch. The crate's `Cargo.toml`
//! proves the rule: it depends on no IO crate.
//!
//! The reference is built with private items (`cargo doc --document-private-items`, a node of
//! odu's own CI): it documents an application's internals, so links to private items are meant.

#![allow(rustdoc::private_intra_doc_links)]

pub mod duration;
pub mod lane;
pub mod node_id;
pub mod plan;
pub mod platform;
pub mod run;
pub mod status;
pub mod suggest;

pub use lane::{LaneEffect, LaneEvent, LaneState, NodeReport, NodeView, TaskSpec};
pub use node_id::{NodeId, SETUP};
pub use plan::{IngestError, Plan, Task};
pub use run::{Run, RunEvent, RunRequest};
pub use status::NodeStatus;
