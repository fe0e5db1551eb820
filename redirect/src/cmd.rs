//! Running `nft` and `ip` with [`std::process::Command`].

use std::io::Write;
use std::process::{Command, Stdio};

use crate::Error;

/// A command line as it would be typed into a shell (arguments with unusual characters quoted).
pub(crate) fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@%+*".contains(c))
            {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `argv` (with `stdin` piped in, if given) and returns its standard output. A non-zero
/// exit becomes [`Error::Command`] naming the command and carrying its standard error.
pub(crate) fn run(argv: &[String], stdin: Option<&str>) -> Result<String, Error> {
    let command = display(argv);
    tracing::debug!(%command, "running");
    let (program, args) = argv.split_first().expect("a command has a program");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A failed write shows up as the command's own error below (it read a short script).
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Builds an owned argv from string slices.
pub(crate) fn argv<I, S>(parts: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    parts.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_when_needed() {
        assert_eq!(
            display(&argv(["nft", "-f", "-"])),
            "nft -f -",
            "plain arguments stay bare"
        );
        assert_eq!(
            display(&argv(["echo", "a b", "it's"])),
            "echo 'a b' 'it'\\''s'"
        );
    }

    #[test]
    fn failures_name_the_command_and_its_stderr() {
        let err = run(&argv(["sh", "-c", "echo oops >&2; exit 3"]), None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`sh -c 'echo oops >&2; exit 3'`"), "{text}");
        assert!(text.contains("oops"), "{text}");
        let err = run(&argv(["/nonexistent/chokepoint-nft"]), None).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }

    #[test]
    fn stdin_is_passed() {
        assert_eq!(run(&argv(["cat"]), Some("table")).unwrap(), "table");
    }
}
