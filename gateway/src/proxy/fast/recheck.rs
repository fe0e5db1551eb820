//! `recheckOnReload` for fast-path flows: right after a new snapshot's generation is in force,
//! every live flow allowed at an older one is re-decided from conntrack, instead of waiting
//! for its next packet from the pod (which may never come while the far side keeps sending).
//!
//! A flow still allowed gets the new generation in its ct mark, so its next packet is not
//! queued at all. A flow now denied gets the *revoked* mark, so the capture refuses its next
//! packet from either side (TCP reset, UDP drop), and an idle TCP connection's two ends are
//! woken with a challenge SYN so that they get that reset now ([`Challenger`]). Its conntrack
//! entry stays, marked, until conntrack ages it: deleting it would let the far side's next
//! segment open a fresh entry as a connection from outside, which the capture lets through.
//!
//! The queue still re-decides a flow whose next packet beats the walk (the same decision, so
//! the flow may be audited twice then), and any flow the dump missed.

use std::io;

use chokepoint_redirect::FastPath;
use chokepoint_redirect::challenge::Challenger;
use chokepoint_redirect::conntrack::{Conntrack, L4};
use chokepoint_redirect::packet::Tuple;

use super::decide::{self, Path};
use super::permits::FastPermits;
use crate::metrics::FastVerdictLabel;
use crate::proxy::Context;

/// What one walk did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rechecked {
    /// Still allowed: moved to the new generation.
    pub kept: usize,
    /// Denied now: marked revoked (and audited).
    pub revoked: usize,
    /// Ended between the dump and the update.
    pub gone: usize,
}

/// Re-decides every live flow allowed at a generation other than `generation` (the one in
/// force) with the snapshot in force.
pub fn live_flows(
    ctx: &Context,
    fast: &FastPath,
    generation: u32,
    permits: &FastPermits,
) -> io::Result<Rechecked> {
    let marks = fast.marks();
    let mask = marks.mask();
    let mut conntrack = Conntrack::open()?;
    let entries = conntrack.entries(|mark| {
        marks
            .allowed_generation(mark)
            .is_some_and(|g| g != generation)
    })?;
    let snapshot = ctx.state.snapshot();
    let mut challenger = Challenger::new(marks.revoked());
    let mut done = Rechecked::default();
    for entry in &entries {
        // Decided on where the flow goes (the backend, if kube-proxy translated it).
        let tuple = Tuple {
            protocol: entry.protocol,
            src: entry.src,
            dst: entry.reached,
            syn: false,
        };
        let addressed = (entry.dst != entry.reached).then_some(entry.dst);
        let (state, label) = match decide::again(ctx, &snapshot, &tuple, addressed) {
            Path::Kernel => (marks.allowed(generation), FastVerdictLabel::Kernel),
            Path::Revoked | Path::Proxy(_) => (marks.revoked(), FastVerdictLabel::Revoked),
        };
        if !conntrack.set_mark(entry, state, mask)? {
            permits.release(entry.protocol, entry.src, entry.reached);
            done.gone += 1;
            continue;
        }
        ctx.metrics.fast_path(label);
        if label == FastVerdictLabel::Kernel {
            done.kept += 1;
            continue;
        }
        done.revoked += 1;
        permits.release(entry.protocol, entry.src, entry.reached);
        if entry.protocol == L4::Tcp {
            // The SYN's sequence number does not matter (see the challenge module). Towards
            // the pod from what it addressed, towards the far end from the pod.
            let seq: u32 = entry.src.port().into();
            for (from, to) in [(entry.dst, entry.src), (entry.src, entry.reached)] {
                if let Err(e) = challenger.send(from, to, seq) {
                    tracing::warn!(target: "fast_path", "challenge SYN {from} → {to}: {e}");
                }
            }
        }
    }
    Ok(done)
}
