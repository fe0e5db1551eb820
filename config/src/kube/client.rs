//! Connecting to the API server: a kubeconfig file, the in-cluster service account, or
//! whatever kube's inference finds.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::Error;

/// Where the client configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSource {
    /// In-cluster when running in a pod, else `$KUBECONFIG` or `~/.kube/config`.
    Infer,
    /// This kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` and the mounted token).
    InCluster,
}

/// Builds a client. No request is made yet.
pub async fn connect(source: &ClientSource) -> Result<Client, Error> {
    let config = match source {
        ClientSource::Infer => Config::infer().await?,
        ClientSource::InCluster => Config::incluster()?,
        ClientSource::Kubeconfig(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
    };
    Ok(Client::try_from(config)?)
}
