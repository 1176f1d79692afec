//! The `kinglet` command. Every failure ends as one line on stderr,
//! `kinglet: error: ...`, and a non-zero exit: 1 for a failed command or
//! check, 2 for a command line clap could not parse.

use std::process::ExitCode;

use kinglet::printable::Printable;
use kinglet_tools::cmd::{Cli, Status};

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = match kinglet_tools::cmd::parse_args::<Cli>("kinglet") {
        Ok(cli) => cli,
        Err(code) => return code,
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
