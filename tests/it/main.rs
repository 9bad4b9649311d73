//! odu's binary-level and protocol-level tests: real `just`, real git, real processes.

// The tests start odu, git, sshd and the rest themselves: the rule that only the spawner and
// the tool module create processes is odu's, not its tests'.
#![allow(clippy::disallowed_methods)]

mod bad_input;
mod cli_run;
mod corpus;
mod fake_github;
mod github;
mod golden_frames;
mod harness;
mod install;
mod junit;
mod just_fidelity;
mod just_vars;
mod lab;
mod layout;
mod mcp;
mod monitor;
mod plan_fidelity;
mod refusals;
mod remote;
mod repo;
mod run_logs;
mod runner_protocol;
mod serve;
mod stranger;
mod surface;
mod trust_client;
mod trust_config;
mod trust_disk;
mod trust_memory;
mod trust_runner;
mod trust_ssh;
mod trust_trail;
