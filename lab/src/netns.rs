//! Running things inside a lab network namespace.
//!
//! Two ways in:
//!
//! - [`command`] wraps a program in `ip netns exec <netns>`: a subprocess that lives entirely
//!   in the namespace (a gateway, dnsmasq, curl). This is what the demo and the end-to-end
//!   suites use for anything long-running.
//! - [`run_in`] / [`spawn_in`] run a closure on a **dedicated thread** that first enters the
//!   namespace with `setns(2)`. Linux keeps the network namespace per thread, so only that
//!   thread moves; the rest of the process stays where it was. Every socket the closure
//!   creates belongs to the namespace for its whole life, even when it is later used from
//!   another thread, so a common pattern is "bind in the namespace, serve from anywhere":
//!
//!   ```no_run
//!   use chokepoint_lab::{netns, probe};
//!   # fn demo(host_netns: &str) -> std::io::Result<()> {
//!   let server = netns::run_in(host_netns, || {
//!       probe::TcpServer::bind(&probe::TcpServeArgs::new("0.0.0.0:7000".parse().unwrap()))
//!   })??;
//!   let handle = server.spawn()?; // accepts in the namespace the listener was made in
//!   # drop(handle); Ok(())
//!   # }
//!   ```
//!
//!   Threads spawned *by* the closure inherit the namespace too (so a tokio runtime built
//!   inside it runs there). Only the network namespace changes: the mount namespace, `/sys`
//!   and `/etc/netns/<name>` are not touched as `ip netns exec` does.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::thread::{self, JoinHandle};

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps the named namespaces (bind mounts of `/proc/<pid>/ns/net`).
pub const NETNS_DIR: &str = "/run/netns";

/// The file that names a network namespace.
pub fn path(netns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(netns)
}

/// Whether a named network namespace exists.
pub fn exists(netns: &str) -> bool {
    path(netns).exists()
}

/// `ip netns exec <netns> <program>`; add arguments, stdio and environment as usual.
pub fn command(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.arg("netns").arg("exec").arg(netns).arg(program);
    cmd
}

/// Moves the **calling thread** into the named network namespace, for good: there is no way
/// back short of ending the thread. Prefer [`run_in`] or [`spawn_in`], which use a thread of
/// their own.
pub fn enter(netns: &str) -> io::Result<()> {
    let file = File::open(path(netns)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace {netns:?}: {e}"),
        )
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot enter network namespace {netns:?}: {e}"),
        )
    })
}

/// Runs `f` on a fresh thread inside the named network namespace and waits for it. The
/// closure may borrow from the caller. A panic in `f` is re-raised here; `Err` means the
/// namespace could not be entered (and `f` did not run).
pub fn run_in<F, T>(netns: &str, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name(format!("netns:{netns}"))
            .spawn_scoped(scope, move || {
                enter(netns)?;
                Ok(f())
            })?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Starts `f` on a new thread inside the named network namespace and returns once the thread
/// is in it, so `Err` reports a namespace that cannot be entered synchronously (and `f` never
/// runs outside the namespace).
pub fn spawn_in<F, T>(netns: &str, f: F) -> io::Result<NetnsThread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let name = netns.to_owned();
    let inner = thread::Builder::new()
        .name(format!("netns:{netns}"))
        .spawn(move || {
            let entered = enter(&name);
            let ok = entered.is_ok();
            // Fails only when the caller is gone, and then nobody wants the result.
            let _ = entered_tx.send(entered);
            ok.then(f)
        })?;
    let entered = entered_rx.recv().unwrap_or_else(|_| {
        Err(io::Error::other(format!(
            "thread for network namespace {netns:?} ended early"
        )))
    });
    match entered {
        Ok(()) => Ok(NetnsThread { inner }),
        Err(e) => {
            let _ = inner.join();
            Err(e)
        }
    }
}

/// A thread started by [`spawn_in`], running inside its network namespace.
#[derive(Debug)]
pub struct NetnsThread<T> {
    inner: JoinHandle<Option<T>>,
}

impl<T> NetnsThread<T> {
    /// Waits for the thread; `Err` carries its panic, as [`JoinHandle::join`] does.
    pub fn join(self) -> thread::Result<T> {
        match self.inner.join()? {
            Some(value) => Ok(value),
            None => unreachable!("spawn_in hands out only threads that entered the namespace"),
        }
    }

    /// Whether the closure has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}
