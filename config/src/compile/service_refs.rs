//! Warnings for DeveloperNetworkPolicy `services` entries the inventory cannot resolve.
//!
//! Such an entry is valid (the Service may be created later) and matches nothing until the
//! inventory has it: an `Accept` opens nothing, a `Deny` closes nothing. A typo there would
//! go unnoticed, so a load whose inventory lists Services says which entries name a Service
//! or a port name it does not have. An inventory without any Service (policies checked on
//! their own) says nothing.

use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::inventory::Inventory;
use crate::model::{DeveloperPolicy, Peer};

/// One warning per unresolved Service and per unknown port name, at the policy's object.
pub fn unresolved_services(
    policies: &[DeveloperPolicy],
    inventory: &Inventory,
    out: &mut Diagnostics,
) {
    if inventory.services.is_empty() {
        return;
    }
    for policy in policies {
        for (r, rule) in policy.egress.iter().enumerate() {
            for (p, peer) in rule.peers.iter().enumerate() {
                let Peer::Services(list) = peer else { continue };
                for (i, entry) in list.iter().enumerate() {
                    let at = format!("spec.egress[{r}].to[{p}].services[{i}]");
                    let service = (entry.namespace.as_str(), entry.name.as_str());
                    let Some(svc) = inventory
                        .services
                        .iter()
                        .find(|s| (s.namespace.as_str(), s.name.as_str()) == service)
                    else {
                        warn(
                            out,
                            policy,
                            format!(
                                "{at}: the inventory has no Service {}/{}; the entry matches nothing until it exists",
                                service.0, service.1
                            ),
                        );
                        continue;
                    };
                    let named: Vec<&str> = svc
                        .ports
                        .iter()
                        .filter_map(|sp| sp.name.as_deref())
                        .collect();
                    for (j, port) in entry.ports.iter().flatten().enumerate() {
                        if !named.contains(&port.as_str()) {
                            let has = if named.is_empty() {
                                "it has no named port; leave `ports` out to match every port"
                                    .to_owned()
                            } else {
                                format!("its named ports: {}", named.join(", "))
                            };
                            warn(
                                out,
                                policy,
                                format!(
                                    "{at}.ports[{j}]: Service {}/{} has no port named `{port}` ({has}); the name matches nothing",
                                    service.0, service.1
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

fn warn(out: &mut Diagnostics, policy: &DeveloperPolicy, message: String) {
    out.push(Diagnostic {
        severity: Severity::Warning,
        file: policy.origin.file.clone(),
        line: policy.origin.line,
        column: 1,
        object: Some(format!(
            "{}/{}/{}",
            crate::api::developer::KIND,
            policy.namespace,
            policy.name
        )),
        message,
    });
}
