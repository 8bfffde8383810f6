//! The `taskrouter-summarizer` binary: parses the command line and reports the outcome;
//! each command's body is in the library's `cli` module.

use clap::Parser;
use taskrouter_summarizer::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    taskrouter_summarizer::app::tune_allocator();
    match cli::run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once, even where a library's message repeats its source.
            eprintln!(
                "error: {}",
                taskrouter_summarizer::util::error_chain(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}
