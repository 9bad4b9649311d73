//! `odu`: the coordinator and its faces.

use clap::FromArgMatches;
use odu::cli::{Cli, Command};
use odu::command;

fn main() {
    let cli = Cli::from_arg_matches(&odu::cli::command().get_matches()).unwrap_or_else(|e| e.exit());
    let process = match cli.command {
        Command::Serve(_) => odu::diag::Process::Server,
        _ => odu::diag::Process::Client,
    };
    odu::diag::init(process);
    let result = match cli.command {
        Command::Run(args) => command::run::run(args),
        Command::Serve(args) => command::serve::serve(args),
        Command::Hosts(args) => command::hosts::hosts(args),
        Command::Dump(args) => command::plan::dump(args),
        Command::Graph(args) => command::plan::graph(args),
        Command::Runs(args) => command::runs::runs(args),
        Command::Status(args) => command::status::status(args),
        Command::Logs(args) => command::logs::logs(args),
        Command::Rerun(args) => command::rerun::rerun(args),
        Command::Cancel(args) => command::cancel::cancel(args),
        Command::Attach(args) => command::attach::attach(args, false),
        Command::Monitor(args) => command::attach::attach(args, true),
        Command::Wait(args) => command::wait::wait(args),
        Command::Mcp(args) => command::mcp::mcp(args),
        Command::Completions(args) => command::docs::completions(args),
        Command::Man(args) => command::docs::man(args),
        Command::Protect(args) => command::protect::protect(args),
    };
    odu::clock::report_peak_rss("odu");
    match result {
        Ok(code) => std::process::exit(code),
        // A closed stdout ends a command with nothing to say.
        Err(e) if e.is_quiet() => std::process::exit(e.code),
        Err(e) => {
            odu::error::say(e.render());
            std::process::exit(e.code);
        }
    }
}
