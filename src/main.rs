//! The `taskrouter-summarizer` binary: parses the command line and reports the outcome;
//! each command's body is in the library's `cli` module.

use clap::Parser;
use taskrouter_summarizer::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    taskrouter_summarizer::app::tune_allocator();
    match cli::run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
