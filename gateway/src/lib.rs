//! Chokepoint, the per-node egress gateway.
//!
//! This crate owns the compiled policy and verdict engine ([`policy`]), the data path
//! ([`proxy`]: transparent TCP/UDP with a verdict per connection or flow, [`l7`] peeks,
//! [`metadata`] rewrite), the [`audit`] log, [`metrics`] and the [`admin`] endpoint, the policy
//! [`source`]s and the snapshot in force ([`state`]), `chokepoint run` ([`app`]) and the
//! command-line interface ([`cli`]). ARCHITECTURE.md maps the crates and the main paths.

pub mod admin;
pub mod app;
pub mod audit;
pub mod capture;
pub mod cli;
pub mod drain;
pub mod flows;
pub mod fuzz;
pub mod l7;
pub mod map;
pub mod metadata;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod recommend;
pub mod source;
pub mod state;
pub mod unserved;
pub mod upstream;
