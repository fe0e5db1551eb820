//! The dependency map (`chokepoint map`): observed flows as one self-contained HTML page.
//!
//! - [`graph`]: flow-log and audit records, with the inventory and policies, into a [`Graph`]:
//!   namespaces as groups, workloads as nodes (pods folded by their workload), outside
//!   destinations by name or address, and one edge per source, destination, port and kind
//!   (`allowed`, `denied`, `staged`) with the flows' count and who decided them.
//! - [`page`]: the HTML page: the graph as JSON, drawn as SVG by the page's own script and
//!   listed in a table. Nothing is fetched: no CDN, no network.

pub mod graph;
pub mod page;

pub use graph::{Edge, EdgeKind, Graph, Node};
