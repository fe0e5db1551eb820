//! `--kubeconfig PATH` / `--in-cluster`: `explain` and `check` on the live state of a cluster,
//! read once with the same kinds, conversions and validation as the gateway's watchers.

use std::path::PathBuf;

use chokepoint_config::kube::{ClientSource, ClusterObjects, connect, list_once};

use super::Error;

/// Where to read the cluster from; neither flag: files.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Read policies and the inventory from the cluster of this kubeconfig (its current
    /// context) instead of files.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Read them from the cluster this runs in (the pod's service account).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub in_cluster: bool,
}

impl ClusterArgs {
    pub fn source(&self) -> Option<ClientSource> {
        match (&self.kubeconfig, self.in_cluster) {
            (Some(path), _) => Some(ClientSource::Kubeconfig(path.clone())),
            (None, true) => Some(ClientSource::InCluster),
            (None, false) => None,
        }
    }
}

/// Lists every watched kind once.
pub fn read(source: &ClientSource) -> Result<ClusterObjects, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = connect(source).await?;
        Ok(list_once(&client).await?)
    })
}
