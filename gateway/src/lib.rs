//! Chokepoint, the per-node egress gateway.
//!
//! This crate owns the compiled policy and verdict engine ([`policy`]) and the command-line
//! interface ([`cli`]). The data path (TCP/UDP proxying, L7 peeks, metadata rewrite, audit
//! log, metrics and admin endpoints) will live here too.

pub mod admin;
pub mod app;
pub mod audit;
pub mod capture;
pub mod cli;
pub mod drain;
pub mod fuzz;
pub mod l7;
pub mod metadata;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod source;
pub mod state;
pub mod upstream;
