//! Where snapshots come from: files ([`files`]) or the Kubernetes API ([`kube`]). Each
//! compiles the world it reads and installs it in the [`PolicyState`](crate::state::PolicyState).

pub mod files;
pub mod kube;
