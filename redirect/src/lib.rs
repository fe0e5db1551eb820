//! Traffic capture for Chokepoint: how pod egress gets into the gateway, and how the gateway's
//! own sockets get out again without looping.
//!
//! This crate owns, on each node:
//! - the **`inet chokepoint` nftables table**. In TPROXY mode (the default) one prerouting chain
//!   at priority `dstnat + 10` (after kube-proxy's Service DNAT, so a connection to a ClusterIP
//!   arrives with the backend as its destination and the ClusterIP in conntrack) skips the
//!   gateway's own traffic (its `SO_MARK`), diverts pod TCP, UDP and optionally DNS to the gateway's transparent sockets with `tproxy`, marks replies to the
//!   gateway's transparent upstream sockets, and **ends with an explicit drop**: nftables'
//!   `tproxy` lets a packet continue when no socket listens, so without the drop a stopped
//!   gateway would let pods reach everything. In REDIRECT mode (TCP fallback) a NAT chain
//!   before kube-proxy's (a connection keeps the first NAT binding it gets) redirects pod TCP
//!   to the gateway's port and a filter chain drops every other pod packet. See [`render`] for the exact text;
//! - the **policy routing** that delivers marked packets to local sockets: per family
//!   `ip rule add pref P fwmark MARK/MASK lookup TABLE` and
//!   `ip route replace local default dev lo table TABLE` (TPROXY mode only);
//! - the **socket options** for transparent proxying in [`sockopt`] (Linux): transparent
//!   listeners, UDP with the original destination, replies from a non-local address, upstream
//!   sockets that keep the pod's source IP, `SO_MARK`, `SO_ORIGINAL_DST`; in [`conntrack`]
//!   the address a UDP flow was sent to before kube-proxy's DNAT, and the walk over flow
//!   marks the fast path re-decides after a reload;
//! - for the kernel fast path: the packet queue ([`queue`]) and its rule, the flow marks
//!   ([`FlowMark`]), the maps that say where a translated new flow was addressed
//!   ([`addressed`]), and the challenge SYNs that wake the ends of a revoked connection
//!   ([`challenge`]);
//! - **install / verify / remove** of the above ([`install`], [`verify`], [`remove`]), which
//!   detect leftovers from an earlier run and either refuse with the exact removal commands
//!   ([`InstallMode::Fresh`]) or replace them atomically ([`InstallMode::Replace`]).
//!
//! Rules are rendered as nft text and applied with `nft -f -` in one transaction, and policy
//! routing is driven with the `ip` binary (iproute2); both must be installed. Everything acts
//! on the network namespace of the calling thread (a child process inherits it), which is how
//! the tests run it in throwaway namespaces.
//!
//! What the rules do not do: decide. Every captured connection reaches the gateway, which
//! applies policy; this crate only guarantees that pod traffic has no other way out.

mod cmd;
mod error;
mod fast_path;
mod install;
mod render;
mod spec;
mod unserved;

#[cfg(target_os = "linux")]
pub mod addressed;
#[cfg(target_os = "linux")]
pub mod challenge;
#[cfg(target_os = "linux")]
pub mod conntrack;
#[cfg(target_os = "linux")]
mod netlink;
pub mod packet;
#[cfg(target_os = "linux")]
pub mod queue;
#[cfg(target_os = "linux")]
mod queue_rule;
#[cfg(target_os = "linux")]
pub mod sockopt;

pub use error::{Error, Leftovers};
pub use fast_path::{
    CloseMarks, FastPath, FlowMark, installed_generation, render_generation, set_generation,
};
pub use install::{InstallMode, install, remove, spoofed_packets, verify};
pub use render::{Rendered, SPOOFED_COUNTER, SPOOFED_LOG_PREFIX, render};
pub use spec::{CaptureMode, CaptureSpec, IpFamilies, L4, TABLE_NAME};
pub use unserved::{render_unserved, set_unserved};
