//! Whether a policy is enforced or staged: the `policy.chokepoint.dev/mode` annotation.
//!
//! A staged policy decides no traffic. The gateway decides each flow a second time as if the
//! staged policies were enforced and records where that verdict differs, so that a policy
//! can be seen at work before it is switched on.

use serde_json::Value;

use crate::source::child;

/// The annotation that sets a policy's mode, on any policy kind.
pub const MODE_ANNOTATION: &str = "policy.chokepoint.dev/mode";

/// How a policy takes part in decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMode {
    /// It decides traffic (the annotation is absent, or `enforced`).
    #[default]
    Enforced,
    /// It is evaluated beside the enforced policies and decides nothing.
    Staged,
}

impl PolicyMode {
    /// The mode an object's annotations ask for; for a value that is no mode, the JSON
    /// pointer of the annotation and the message.
    pub fn of(object: &Value) -> Result<PolicyMode, (String, String)> {
        let Some(value) = object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(MODE_ANNOTATION))
        else {
            return Ok(PolicyMode::Enforced);
        };
        match value.as_str() {
            Some("staged") => Ok(PolicyMode::Staged),
            Some("enforced") => Ok(PolicyMode::Enforced),
            _ => Err((
                child("/metadata/annotations", MODE_ANNOTATION),
                format!(
                    "annotation `{MODE_ANNOTATION}` is {value}: it must be `staged` (evaluated, \
                     decides nothing) or `enforced` (the default); remove it to enforce"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_annotation_means_enforced() {
        assert_eq!(
            PolicyMode::of(&json!({"metadata": {}})),
            Ok(PolicyMode::Enforced)
        );
        let other = json!({"metadata": {"annotations": {"a": "staged"}}});
        assert_eq!(PolicyMode::of(&other), Ok(PolicyMode::Enforced));
    }

    #[test]
    fn a_value_that_is_no_mode_names_the_annotation() {
        let bad = json!({"metadata": {"annotations": {MODE_ANNOTATION: "audit"}}});
        let (pointer, message) = PolicyMode::of(&bad).unwrap_err();
        assert_eq!(pointer, "/metadata/annotations/policy.chokepoint.dev~1mode");
        assert!(message.contains("\"audit\""), "{message}");
    }
}
