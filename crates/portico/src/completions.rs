//! Shell completions (`portico completions bash|zsh|fish|...`) and the man page (`portico man [DIR]`,
//! hidden; scripts/package.sh installs its pages), both generated from the clap
//! definition of the command line so they cannot drift from it.

use std::io::Write as _;
use std::process::ExitCode;

use clap::CommandFactory;

/// Prints the completion script for `shell` on stdout.
pub fn completions<C: CommandFactory>(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = C::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "portico", &mut out);
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// Writes the man pages: `portico.1` on stdout, or with `dir` the whole set into it
/// (`portico.1` and one `portico-SUBCOMMAND.1` per subcommand, which `portico.1` refers to).
pub fn man<C: CommandFactory>(dir: Option<&std::path::Path>) -> ExitCode {
    let cmd = C::command();
    let result = match dir {
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)),
        None => {
            let mut buf: Vec<u8> = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .and_then(|()| std::io::stdout().lock().write_all(&buf))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments and subcommands of `cmd` (walked recursively) that have no help line, so
/// that `--help`, the completions and the man page never show a bare name.
#[cfg(test)]
pub fn undescribed(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(cmd, cmd.get_name(), &mut missing);
    missing
}
