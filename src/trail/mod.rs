//! The files odu keeps: the ledger of runs and every node's log under `.ci/`, and the spool a
//! log file is written and followed through (the runner's own spools use it too).

pub mod ci;
pub mod junit;
pub mod ledger;
pub mod retention;
pub mod spool;
