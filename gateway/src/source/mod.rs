//! Where snapshots come from: files ([`files`]) or the Kubernetes API ([`kube`]). Each
//! compiles the world it reads and installs it in the [`PolicyState`](crate::state::PolicyState).
//! What the Kubernetes source reports back to the API server is [`report`].

pub mod files;
pub mod kube;
pub mod report;
