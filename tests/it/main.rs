//! odu's binary-level and protocol-level tests: real `just`, real git, real processes.

mod harness;
mod runner_protocol;
