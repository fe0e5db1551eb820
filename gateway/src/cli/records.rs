//! Reading flow-log and audit files for `recommend` and `map`.

use std::path::{Path, PathBuf};

use chokepoint_config::{Diagnostic, Severity};

use crate::flows::{FlowLine, parse_lines};

/// Reads every file line by line and hands each record to `each` with its file and line
/// number; an unreadable file or line comes back as a located error.
pub(super) fn read(
    paths: &[PathBuf],
    mut each: impl FnMut(&Path, u64, FlowLine),
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Diagnostic {
                    severity: Severity::Error,
                    file: path.clone(),
                    line: 0,
                    column: 0,
                    object: None,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        for (n, parsed) in parse_lines(path, &text) {
            match parsed {
                Ok(line) => each(path, n, line),
                Err(d) => problems.push(d),
            }
        }
    }
    problems
}
