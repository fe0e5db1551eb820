//! Every watched kind listed once: the live state for `chokepoint explain` and `check`
//! against a cluster, converted and assembled exactly as the watchers do.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::Error;
use super::kinds::WATCHED;
use super::objects::{self, ClusterObjects, Keyed};

const PAGE: u32 = 500;

/// Lists every kind (paged); a CRD that is not installed is an empty kind.
pub async fn list_once(client: &Client) -> Result<ClusterObjects, Error> {
    let mut out = ClusterObjects::new(WATCHED);
    for kind in WATCHED {
        let c = client.clone();
        let listed = match kind.kind {
            "Namespace" => all(Api::<Namespace>::all(c), objects::namespace).await,
            "Node" => all(Api::<Node>::all(c), objects::node).await,
            "Pod" => all(Api::<Pod>::all(c), objects::pod).await,
            "Service" => all(Api::<Service>::all(c), objects::service).await,
            "EndpointSlice" => all(Api::<EndpointSlice>::all(c), objects::endpoint_slice).await,
            _ => {
                let api = Api::<DynamicObject>::all_with(c, &kind.api_resource());
                all(api, |o| objects::policy(kind, o)).await
            }
        };
        match listed {
            Ok(items) => {
                out.replace(kind.kind, items);
            }
            Err(kube::Error::Api(s)) if kind.optional && s.code == 404 => out.absent(kind.kind),
            Err(source) => {
                return Err(Error::List {
                    kind: kind.kind,
                    source,
                });
            }
        }
    }
    Ok(out)
}

async fn all<K, F>(api: Api<K>, convert: F) -> Result<Vec<Keyed>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> Keyed,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        params.continue_token = token.take();
        let page = api.list(&params).await?;
        out.extend(page.items.iter().map(&convert));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}
