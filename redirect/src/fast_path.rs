//! The kernel fast path's part of the capture: which queues new pod flows wait in, and how a
//! flow's decision is kept in its conntrack mark ([`FlowMark`]).
//!
//! A flow's state lives in the bits of [`FastPath::flow_mask`] of its ct mark, as one number:
//! 0 — not decided yet; 1 ..= [`FlowMark::max_generation`] — allowed by the gateway's policies
//! at that generation; then *proxy* (the gateway's proxy decides it, as without the fast
//! path); then *revoked* (denied after it was allowed: reset or dropped). The gateway hands
//! its decision back in the same bits of the packet mark, and the capture chain copies it.
//! A flow allowed at a generation other than the current one ([`set_generation`]) is queued
//! again with its next packet and re-decided.

use std::fmt::Write as _;

use crate::Error;
use crate::cmd::{self, argv};
use crate::spec::TABLE_NAME;

/// The set holding the one generation whose allowed flows pass without a look.
pub(crate) const CURRENT_SET: &str = "fast_current";

/// The fast path of a TPROXY capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FastPath {
    /// The first queue number.
    pub first_queue: u16,
    /// How many queues (one reader each); flows are spread over them by address hash.
    pub queues: u16,
    /// The ct mark (and packet mark) bits holding a flow's state: contiguous, at least 4, and
    /// outside the capture's `mark_mask`.
    pub flow_mask: u32,
    /// The two ct mark bits noting which ends of a TCP flow closed ([`CloseMarks`]): outside
    /// `flow_mask` and the capture's `mark_mask`.
    pub close_mask: u32,
    /// The generation installed as current (see [`set_generation`]).
    pub generation: u32,
}

impl FastPath {
    /// The value encoding of the mask.
    pub fn marks(&self) -> FlowMark {
        FlowMark::new(self.flow_mask)
    }

    /// Which ends of a flow closed.
    pub fn closes(&self) -> CloseMarks {
        CloseMarks {
            mask: self.close_mask,
        }
    }

    pub(crate) fn problems(&self, mark_mask: u32, out: &mut Vec<String>) {
        let m = self.flow_mask;
        if m.count_ones() < 4 {
            out.push(format!(
                "flow_mask {m:#x} has fewer than 4 bits: too few generations"
            ));
        } else if (m >> m.trailing_zeros()).trailing_ones() != m.count_ones() {
            out.push(format!("flow_mask {m:#x} is not one run of bits"));
        }
        if m & mark_mask != 0 {
            out.push(format!(
                "flow_mask {m:#x} overlaps mark_mask {mark_mask:#x}"
            ));
        }
        let c = self.close_mask;
        if c.count_ones() != 2 {
            out.push(format!("close_mask {c:#x} is not 2 bits"));
        } else if c & (m | mark_mask) != 0 {
            out.push(format!(
                "close_mask {c:#x} overlaps flow_mask {m:#x} or mark_mask {mark_mask:#x}"
            ));
        }
        if self.queues == 0 {
            out.push("queues is 0".to_string());
        }
        if u32::from(self.first_queue) + u32::from(self.queues) > 65536 {
            out.push(format!(
                "queues {}..{} run past 65535",
                self.first_queue,
                u32::from(self.first_queue) + u32::from(self.queues) - 1
            ));
        }
        if m.count_ones() >= 4 && !(1..=self.marks().max_generation()).contains(&self.generation) {
            out.push(format!(
                "generation {} is outside 1..={}",
                self.generation,
                self.marks().max_generation()
            ));
        }
    }
}

/// Values of a flow's state under a mask (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowMark {
    mask: u32,
    shift: u32,
}

impl FlowMark {
    pub fn new(mask: u32) -> Self {
        FlowMark {
            mask,
            shift: mask.trailing_zeros().min(31),
        }
    }

    pub fn mask(&self) -> u32 {
        self.mask
    }

    fn top(&self) -> u32 {
        self.mask >> self.shift
    }

    /// The highest generation; generations run 1 ..= this and then start again at 1.
    pub fn max_generation(&self) -> u32 {
        self.top().saturating_sub(2)
    }

    /// The mark bits of "allowed at `generation`" (1 ..= max).
    pub fn allowed(&self, generation: u32) -> u32 {
        (generation << self.shift) & self.mask
    }

    /// The generation a flow's state bits say it was allowed at, if they say that.
    pub fn allowed_generation(&self, mark: u32) -> Option<u32> {
        let g = (mark & self.mask) >> self.shift;
        (1..=self.max_generation()).contains(&g).then_some(g)
    }

    pub fn proxy(&self) -> u32 {
        ((self.top() - 1) << self.shift) & self.mask
    }

    pub fn revoked(&self) -> u32 {
        self.mask
    }

    /// The generation after `g`, skipping 0.
    pub fn next_generation(&self, g: u32) -> u32 {
        if g >= self.max_generation() { 1 } else { g + 1 }
    }

    /// Whether a queued packet's mark says its flow is a live one being re-decided (the
    /// capture sets the whole field for those), not a new one.
    pub fn is_redecision(&self, queued_mark: u32) -> bool {
        queued_mark & self.mask == self.mask
    }

    /// Whether a queued packet's mark says kube-proxy translated its new flow (the capture
    /// flags it with the proxy state, which no queued flow has otherwise).
    pub fn is_translated(&self, queued_mark: u32) -> bool {
        queued_mark & self.mask == self.proxy()
    }

    /// `mark` with its state bits replaced by `state`.
    pub fn with(&self, mark: u32, state: u32) -> u32 {
        (mark & !self.mask) | (state & self.mask)
    }
}

/// The ct mark bits that say which ends of a fast-path TCP flow sent a FIN (a RST sets both):
/// the lower one the pod's end (conntrack's original direction), the higher one the other.
///
/// They exist to spare conntrack's announcements. A flow the gateway decided announces only
/// its end (`ct event set destroy`) until both bits are set; the rule that sets the second
/// makes it announce mark changes instead, so the one announcement of a closed connection is
/// that change. The caps' follower then gives the connection's place back at once. Left to
/// itself, conntrack announces about five per connection, each built in the softirq of the
/// packet that made it: four changes of its state, then its end, only when `TIME_WAIT` runs
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseMarks {
    mask: u32,
}

impl CloseMarks {
    pub fn mask(&self) -> u32 {
        self.mask
    }

    /// The bit of the pod's end.
    pub fn original(&self) -> u32 {
        self.mask & self.mask.wrapping_neg()
    }

    /// The bit of the other end.
    pub fn reply(&self) -> u32 {
        self.mask & !self.original()
    }

    /// Whether a ct mark says both ends closed (or one reset).
    pub fn both_closed(&self, ct_mark: u32) -> bool {
        self.mask != 0 && ct_mark & self.mask == self.mask
    }
}

/// The script that makes `generation` the current one, in one transaction: flows allowed at
/// any other generation are re-decided with their next packet.
pub fn render_generation(fast: &FastPath, generation: u32) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "flush set inet {TABLE_NAME} {CURRENT_SET}");
    let _ = writeln!(
        out,
        "add element inet {TABLE_NAME} {CURRENT_SET} {{ {:#010x} }}",
        fast.marks().allowed(generation)
    );
    out
}

/// Applies [`render_generation`] to the installed capture.
pub fn set_generation(fast: &FastPath, generation: u32) -> Result<(), Error> {
    cmd::run(
        &argv(["nft", "-f", "-"]),
        Some(&render_generation(fast, generation)),
    )
    .map(drop)
}

/// The generation the installed capture holds as current, if it has a fast path (what a
/// gateway taking over continues from).
pub fn installed_generation(fast: &FastPath) -> Result<Option<u32>, Error> {
    let listing = match cmd::run(
        &argv(["nft", "list", "set", "inet", TABLE_NAME, CURRENT_SET]),
        None,
    ) {
        Ok(out) => out,
        Err(Error::Command { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(parse_generation(fast, &listing))
}

fn parse_generation(fast: &FastPath, listing: &str) -> Option<u32> {
    let elements = listing.split("elements = {").nth(1)?;
    let value = elements.split(['}', ',']).next()?.trim();
    let mark = u32::from_str_radix(value.trim_start_matches("0x"), 16).ok()?;
    fast.marks().allowed_generation(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> FastPath {
        FastPath {
            first_queue: 100,
            queues: 2,
            flow_mask: 0x0fff_0000,
            close_mask: 0x3000_0000,
            generation: 1,
        }
    }

    #[test]
    fn states_are_distinct_and_inside_the_mask() {
        let m = fast().marks();
        assert_eq!(m.max_generation(), 0xffd);
        assert_eq!(m.allowed(1), 0x0001_0000);
        assert_eq!(m.allowed(m.max_generation()), 0x0ffd_0000);
        assert_eq!(m.proxy(), 0x0ffe_0000);
        assert_eq!(m.revoked(), 0x0fff_0000);
        assert_eq!(m.next_generation(0xffd), 1);
        assert_eq!(m.next_generation(7), 8);
        assert_eq!(m.allowed_generation(0xf005_3000), Some(5));
        assert_eq!(m.allowed_generation(m.proxy()), None);
        assert_eq!(m.allowed_generation(m.revoked()), None);
        assert_eq!(m.allowed_generation(0x3000), None);
        assert_eq!(m.with(0xf000_3000, m.proxy()), 0xfffe_3000);
        // What a queued packet's mark says: new, translated new, or re-decided.
        for (queued, translated, redecision) in [
            (0xf000_3000, false, false),
            (0xfffe_3000, true, false),
            (0xffff_3000, false, true),
        ] {
            assert_eq!(m.is_translated(queued), translated, "{queued:#x}");
            assert_eq!(m.is_redecision(queued), redecision, "{queued:#x}");
        }
    }

    #[test]
    fn the_close_bits_are_told_apart_and_both_mean_closed() {
        let c = fast().closes();
        assert_eq!((c.original(), c.reply()), (0x1000_0000, 0x2000_0000));
        assert!(!c.both_closed(0x1001_0000));
        assert!(!c.both_closed(0x2001_0000));
        assert!(c.both_closed(0x3001_0000));
        assert!(c.both_closed(0xf000_0000));
    }

    #[test]
    fn bad_masks_are_reported() {
        let bad = [
            FastPath {
                flow_mask: 0x7,
                ..fast()
            },
            FastPath {
                flow_mask: 0x0f0f_0000,
                ..fast()
            },
            FastPath {
                flow_mask: 0xf000,
                ..fast()
            },
            FastPath {
                queues: 0,
                ..fast()
            },
            FastPath {
                generation: 0,
                ..fast()
            },
            FastPath {
                close_mask: 0x1000_0000,
                ..fast()
            },
            FastPath {
                close_mask: 0x0003_0000,
                ..fast()
            },
        ];
        let mut p = Vec::new();
        for f in &bad {
            let before = p.len();
            f.problems(0x3000, &mut p);
            assert_eq!(p.len(), before + 1, "one problem for {f:?}: {p:?}");
        }
        assert_eq!(p.len(), 7, "{p:?}");
        let mut none = Vec::new();
        fast().problems(0x3000, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn the_generation_is_swapped_in_one_script_and_read_back() {
        assert_eq!(
            render_generation(&fast(), 5),
            "flush set inet chokepoint fast_current\nadd element inet chokepoint fast_current { 0x00050000 }\n"
        );
        let listing = "table inet chokepoint {\n\tset fast_current {\n\t\ttype mark\n\t\telements = { 0x00050000 }\n\t}\n}\n";
        assert_eq!(parse_generation(&fast(), listing), Some(5));
        assert_eq!(
            parse_generation(&fast(), "set fast_current { type mark }"),
            None
        );
    }
}
