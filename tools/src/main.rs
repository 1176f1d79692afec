//! The `kinglet` command. Every failure ends as one line on stderr,
//! `kinglet: error: ...`, and a non-zero exit: 1 for a failed command or
//! check, 2 for a command line clap could not parse.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use kinglet::printable::Printable;
use kinglet_tools::cmd::{Cli, Status};

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    // Help was asked for (or is the useful answer): print it as clap does.
                    let _ = e.print();
                    ExitCode::from(e.exit_code().clamp(0, 255) as u8)
                }
                _ => {
                    eprintln!(
                        "kinglet: error: {} (see 'kinglet --help')",
                        Printable(&kinglet_tools::cmd::one_line(&e))
                    );
                    ExitCode::from(2)
                }
            };
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command.run(&mut out) {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        // A reader that stopped early (`kinglet inspect m.klt | head`) got
        // what it wanted: no complaint.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the message holds (paths, file contents).
            eprintln!("kinglet: error: {}", Printable(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}
