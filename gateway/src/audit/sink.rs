//! Where audit lines go: stdout, a file with size-based rotation, or any `Write`.
//!
//! Every line is handed to the OS in full before the next one (no user-space buffer that a
//! crash could lose), and a file is rotated only between lines, so a line is never split
//! across files. A write that fails half-way leaves a fragment; the next line then starts
//! with a newline so that it is not glued to the fragment.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::config::{AuditConfig, AuditSink};

/// The destination of audit lines, owned by the writer task.
pub struct Sink {
    target: Target,
    /// The last write stopped inside a line.
    broken_line: bool,
}

enum Target {
    Stdout(io::Stdout),
    File(RotatingFile),
    Writer(Box<dyn Write + Send>),
}

/// What happened to one line.
#[derive(Debug)]
pub(crate) struct LineResult {
    /// The line itself.
    pub written: io::Result<()>,
    /// A rotation that was due failed; the line went to the current file instead.
    pub rotation: Option<io::Error>,
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink {
            target: Target::Stdout(io::stdout()),
            broken_line: false,
        }
    }

    /// Appends to `path` (created with mode 0640 if missing). Before a line would make the file
    /// larger than `max_bytes`, the file is rotated: `path.N-1` → `path.N`, …, `path` →
    /// `path.1`, and a new `path` is started; the oldest file beyond `max_files` is replaced.
    /// A single line longer than `max_bytes` gets a file of its own.
    pub fn file(path: impl Into<PathBuf>, max_bytes: u64, max_files: u32) -> io::Result<Sink> {
        let path = path.into();
        let (file, size) = open_append(&path)?;
        let target = Target::File(RotatingFile {
            path,
            max_bytes,
            max_files: max_files.max(1),
            file,
            size,
        });
        Ok(Sink {
            target,
            broken_line: false,
        })
    }

    /// Any writer (tests, embedding). Each line is one `write_all`-like sequence of writes.
    pub fn writer(w: impl Write + Send + 'static) -> Sink {
        Sink {
            target: Target::Writer(Box::new(w)),
            broken_line: false,
        }
    }

    /// The sink an [`AuditConfig`] asks for; opens the file now, so that a bad path fails at
    /// startup.
    pub fn from_config(config: &AuditConfig) -> io::Result<Sink> {
        Sink::open(
            config.sink,
            config.path.as_deref(),
            config.max_bytes,
            config.max_files,
        )
    }

    /// Stdout, or the file at `path` rotated as [`Sink::file`] says (the flow log's sink is
    /// configured like the audit log's).
    pub fn open(
        sink: AuditSink,
        path: Option<&Path>,
        max_bytes: u64,
        max_files: u32,
    ) -> io::Result<Sink> {
        match sink {
            AuditSink::Stdout => Ok(Sink::stdout()),
            AuditSink::File => {
                let path = path.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the sink `file` needs a `path`",
                    )
                })?;
                Sink::file(path, max_bytes, max_files)
            }
        }
    }

    /// Writes one line, which must end with `\n`.
    pub(crate) fn write_line(&mut self, line: &[u8]) -> LineResult {
        debug_assert!(line.ends_with(b"\n"));
        let mut rotation = None;
        let w: &mut dyn Write = match &mut self.target {
            Target::Stdout(s) => s,
            Target::Writer(w) => w.as_mut(),
            Target::File(f) => {
                if f.size > 0 && f.size.saturating_add(line.len() as u64) > f.max_bytes {
                    if let Err(e) = f.rotate() {
                        rotation = Some(e);
                    } else {
                        // A new file never continues a fragment.
                        self.broken_line = false;
                    }
                }
                let (n, written) = write_line_to(&mut f.file, line, &mut self.broken_line);
                f.size += n as u64;
                return LineResult { written, rotation };
            }
        };
        let (_, written) = write_line_to(w, line, &mut self.broken_line);
        LineResult { written, rotation }
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match &mut self.target {
            Target::Stdout(s) => s.flush(),
            Target::File(f) => f.file.flush(),
            Target::Writer(w) => w.flush(),
        }
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Stdout(_) => f.write_str("Sink::Stdout"),
            Target::File(r) => f
                .debug_struct("Sink::File")
                .field("path", &r.path)
                .field("max_bytes", &r.max_bytes)
                .field("max_files", &r.max_files)
                .field("size", &r.size)
                .finish(),
            Target::Writer(_) => f.write_str("Sink::Writer"),
        }
    }
}

struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    /// At least 1.
    max_files: u32,
    file: File,
    /// Bytes in the current file.
    size: u64,
}

impl RotatingFile {
    fn rotated(&self, i: u32) -> PathBuf {
        let mut p = OsString::from(self.path.as_os_str());
        p.push(format!(".{i}"));
        PathBuf::from(p)
    }

    /// Shifts the rotated files up by one and starts a new file. On failure the current
    /// handle stays in use (even if it was renamed already), so no line is lost.
    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..self.max_files).rev() {
            match fs::rename(self.rotated(i), self.rotated(i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match fs::rename(&self.path, self.rotated(1)) {
            // Removed behind our back: just start a new file.
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let (file, size) = open_append(&self.path)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// Writes `line`, first ending a fragment left by a failed write. Returns the bytes written.
fn write_line_to(
    w: &mut dyn Write,
    line: &[u8],
    broken_line: &mut bool,
) -> (usize, io::Result<()>) {
    let mut total = 0;
    if *broken_line {
        let (n, r) = write_fully(w, b"\n");
        total += n;
        if let Err(e) = r {
            return (total, Err(e));
        }
        *broken_line = false;
    }
    let (n, r) = write_fully(w, line);
    total += n;
    if r.is_err() && n > 0 {
        *broken_line = true;
    }
    (total, r)
}

fn write_fully(w: &mut dyn Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut off = 0;
    while off < buf.len() {
        match w.write(&buf[off..]) {
            Ok(0) => return (off, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (off, Err(e)),
        }
    }
    (off, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{SharedBuf, TempDir};

    #[test]
    fn rotates_between_lines_and_keeps_max_files() {
        let dir = TempDir::new("sink-rotate");
        let path = dir.path().join("audit.log");
        let mut sink = Sink::file(&path, 25, 2).unwrap();
        // 10-byte lines: two per file.
        for i in 0..7 {
            let r = sink.write_line(format!("line {i:04}\n").as_bytes());
            assert!(r.written.is_ok() && r.rotation.is_none(), "{r:?}");
        }
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), "line 0006\n");
        assert_eq!(
            read(dir.path().join("audit.log.1")),
            "line 0004\nline 0005\n"
        );
        assert_eq!(
            read(dir.path().join("audit.log.2")),
            "line 0002\nline 0003\n"
        );
        assert!(!dir.path().join("audit.log.3").exists());
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = TempDir::new("sink-append");
        let path = dir.path().join("audit.log");
        fs::write(&path, "old line\n").unwrap();
        let mut sink = Sink::file(&path, 15, 1).unwrap();
        sink.write_line(b"new 1\n").written.unwrap(); // 9 + 6 = 15: fits
        sink.write_line(b"new 2\n").written.unwrap(); // rotates
        assert_eq!(
            fs::read_to_string(dir.path().join("audit.log.1")).unwrap(),
            "old line\nnew 1\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "new 2\n");
    }

    #[test]
    fn a_line_longer_than_max_bytes_gets_its_own_file() {
        let dir = TempDir::new("sink-long");
        let path = dir.path().join("audit.log");
        let mut sink = Sink::file(&path, 8, 3).unwrap();
        for line in ["a\n", "a very long line\n", "b\n"] {
            sink.write_line(line.as_bytes()).written.unwrap();
        }
        assert_eq!(
            fs::read_to_string(dir.path().join("audit.log.2")).unwrap(),
            "a\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("audit.log.1")).unwrap(),
            "a very long line\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "b\n");
    }

    #[test]
    fn a_failed_rotation_keeps_writing_to_the_current_file() {
        let dir = TempDir::new("sink-rotfail");
        let path = dir.path().join("audit.log");
        let mut sink = Sink::file(&path, 4, 1).unwrap();
        sink.write_line(b"one\n").written.unwrap();
        // A directory where `audit.log.1` must go: the rename fails.
        fs::create_dir(dir.path().join("audit.log.1")).unwrap();
        fs::write(dir.path().join("audit.log.1").join("x"), "").unwrap();
        let r = sink.write_line(b"two\n");
        assert!(r.written.is_ok() && r.rotation.is_some(), "{r:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }

    /// Accepts `budget` bytes, then fails once, then works again.
    struct Flaky {
        out: SharedBuf,
        budget: usize,
        failed: bool,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 && !self.failed {
                self.failed = true;
                return Err(io::Error::other("disk full"));
            }
            let n = if self.failed {
                buf.len()
            } else {
                buf.len().min(self.budget)
            };
            self.budget -= n.min(self.budget);
            self.out.0.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_fragment_is_ended_before_the_next_line() {
        let out = SharedBuf::default();
        let mut sink = Sink::writer(Flaky {
            out: out.clone(),
            budget: 8,
            failed: false,
        });
        assert!(sink.write_line(b"first\n").written.is_ok());
        assert!(sink.write_line(b"second\n").written.is_err());
        assert!(sink.write_line(b"third\n").written.is_ok());
        assert_eq!(out.text(), "first\nse\nthird\n");
    }
}
