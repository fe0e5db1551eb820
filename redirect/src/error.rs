//! The crate's error type.

use std::fmt;

/// Everything that can go wrong while rendering, installing, verifying or removing capture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The [`CaptureSpec`](crate::CaptureSpec) is unusable; every problem is listed.
    #[error("invalid capture spec: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),

    /// A command (`nft`, `ip`) could not be started at all.
    #[error("could not run `{command}`: {source} (is it installed and on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },

    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {}", stderr.trim_end())]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, as printed.
        stderr: String,
    },

    /// [`InstallMode::Fresh`](crate::InstallMode::Fresh) found capture state it did not create.
    #[error("{0}")]
    Conflict(Leftovers),

    /// A netlink request to the kernel failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done.
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// [`verify`](crate::verify) found parts of the capture missing.
    #[error("capture is not (fully) installed: {}", .missing.join("; "))]
    NotInstalled {
        /// What is missing, one entry per missing piece.
        missing: Vec<String>,
    },
}

/// Capture state found on the node that a fresh install would collide with: an existing
/// `inet chokepoint` table, ip rules using the capture mark or the route table, routes in the
/// route table. Its `Display` says what was found and the exact commands that remove it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// One line per object found, as the tools print it.
    pub found: Vec<String>,
    /// Commands that remove exactly what was found, in order.
    pub remove_commands: Vec<String>,
}

impl Leftovers {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "capture state from an earlier run (or another program) is present:"
        )?;
        for line in &self.found {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "remove it with:")?;
        for cmd in &self.remove_commands {
            writeln!(f, "  {cmd}")?;
        }
        write!(
            f,
            "or install with InstallMode::Replace to replace it atomically"
        )
    }
}
