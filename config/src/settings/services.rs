//! `services:`: what the gateway does with connections a pod addressed to a Service.
//!
//! Policy is decided on the backend pod a connection really reaches (docs/services.md). With
//! the TPROXY capture after kube-proxy's DNAT (iptables and nftables modes) the node has
//! already chosen that backend; where nothing translated the ClusterIP before the capture
//! (REDIRECT mode, kube-proxy in IPVS mode, no kube-proxy at all) the gateway chooses one.

use serde::{Deserialize, Serialize};

use super::CaptureMode;
use super::defaults;
use super::field::{Choice, choice};
use crate::compile::Checker;

const P: &str = "/services";

/// Who picks the backend of a connection that reaches the gateway still addressed to a
/// ClusterIP (`services.resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceResolve {
    /// The node's translation where it ran before the capture; otherwise the gateway picks a
    /// ready endpoint of the Service from the EndpointSlices, connects there and decides on
    /// it. A Service without a ready endpoint is refused (`no_endpoints`).
    Auto,
    /// Only the node's translation: a connection still addressed to a ClusterIP is refused
    /// and audited (`service_not_translated`), never decided on the ClusterIP. For nodes
    /// where kube-proxy's choice (session affinity, topology) must be the only one.
    Kernel,
}

/// The `services:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Services {
    pub resolve: ServiceResolve,
}

impl Choice for ServiceResolve {
    const WHAT: &'static str = "services.resolve value";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", ServiceResolve::Auto),
        ("kernel", ServiceResolve::Kernel),
    ];
}

impl Default for Services {
    fn default() -> Self {
        Services {
            resolve: defaults::SERVICES_RESOLVE,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawServices {
    resolve: Option<String>,
}

/// Validates the section; `mode` is the capture mode in force (when it is valid).
pub(super) fn validate(
    c: &mut Checker,
    raw: RawServices,
    mode: Option<CaptureMode>,
) -> Option<Services> {
    let resolve = choice(
        c,
        &format!("{P}/resolve"),
        raw.resolve.as_deref(),
        defaults::SERVICES_RESOLVE,
    )?;
    if resolve == ServiceResolve::Kernel && mode == Some(CaptureMode::Redirect) {
        c.error(
            format!("{P}/resolve"),
            "`kernel` cannot work with `capture.mode: redirect`: REDIRECT captures before \
             kube-proxy's Service DNAT (a connection keeps the first NAT it gets), so no \
             connection is ever translated; use `services.resolve: auto` (the gateway picks \
             the backend) or `capture.mode: tproxy`",
        );
        return None;
    }
    Some(Services { resolve })
}

#[cfg(test)]
mod tests {
    use crate::settings::{GatewaySettings, ServiceResolve, assert_error_at};
    use std::path::Path;

    /// The minimal valid file plus `extra` (lines from 7 on).
    fn load(extra: &str) -> Result<GatewaySettings, crate::diagnostic::Diagnostics> {
        let text = format!(
            "node: worker-1\ncapture:\n  interfaces: [\"ckp*\"]\npolicy:\n  paths: [p]\n  inventory: [i.yaml]\n{extra}"
        );
        GatewaySettings::from_str(Path::new("gw.yaml"), &text)
    }

    #[test]
    fn the_gateway_resolves_untranslated_services_by_default() {
        let s = load("").unwrap();
        assert_eq!(s.services.resolve, ServiceResolve::Auto);
        let s = load("services:\n  resolve: kernel\n").unwrap();
        assert_eq!(s.services.resolve, ServiceResolve::Kernel);
    }

    #[test]
    fn an_unknown_value_is_located() {
        let err = load("services:\n  resolve: ipvs\n").unwrap_err();
        assert_error_at(
            &err,
            8,
            "unknown services.resolve value `ipvs`; use auto or kernel",
        );
    }

    #[test]
    fn kernel_resolution_with_redirect_capture_refuses_to_start_naming_both_settings() {
        let text = "services:\n  resolve: kernel\n";
        let err = GatewaySettings::from_str(
            Path::new("gw.yaml"),
            &format!(
                "capture:\n  mode: redirect\n  interfaces: [\"ckp*\"]\npolicy:\n  paths: [p]\n  inventory: [i.yaml]\n{text}"
            ),
        )
        .unwrap_err();
        assert_error_at(&err, 8, "capture.mode: redirect");
        assert_error_at(&err, 8, "services.resolve: auto");
    }

    #[test]
    fn unknown_keys_in_the_section_are_located() {
        let err = load("services:\n  resolv: kernel\n").unwrap_err();
        assert!(err.errors().any(|d| d.line == 8), "{err}");
    }
}
