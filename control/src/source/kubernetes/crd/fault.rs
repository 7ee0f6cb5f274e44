//! `FaultInjection` (`policy.mesh.dev/v1alpha1`): the Kubernetes home of the `FaultInjection`
//! route filter, which an HTTPRoute or GRPCRoute rule names with an `ExtensionRef` filter.
//!
//! The spec has the shape of [`mesh_core::config::FaultInjectionSpec`], so that moving a fault
//! from the control file into the cluster changes where it lives, not what it says. The API
//! server checks the bounds up front (CEL rules); mesh-core's validation runs again when the
//! route that names it is attached, and also checks that the abort's status suits the route's
//! kind (`httpStatus` on an HTTPRoute, `grpcStatus` on a GRPCRoute).
//!
//! ```yaml
//! apiVersion: policy.mesh.dev/v1alpha1
//! kind: FaultInjection
//! metadata: {name: flaky, namespace: default}
//! spec:
//!   delay: {fixedDelay: 100ms, percent: 10}
//!   abort: {httpStatus: 503, percent: 0.1}
//! ```

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The spec of a `FaultInjection`: what to inject into the calls of the rules that name it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "policy.mesh.dev",
    version = "v1alpha1",
    kind = "FaultInjection",
    plural = "faultinjections",
    shortname = "meshfault",
    category = "mesh",
    namespaced,
    derive = "PartialEq"
)]
#[x_kube(validation = Rule::new("has(self.delay) || has(self.abort)")
    .message("set delay, abort or both"))]
#[serde(rename_all = "camelCase")]
pub struct FaultInjectionSpec {
    /// Holds a share of calls back before they are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Answers a share of calls with an error without sending them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// A fixed delay for a share of calls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// How long, as a Gateway API duration (`100ms`, `1s`); above 0 and at most 5 minutes.
    #[x_kube(validation = Rule::new("self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$')")
        .message("a duration such as 100ms or 1s"))]
    pub fixed_delay: String,
    /// Share of calls delayed, 0 to 100 in steps of 0.0001; 100 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 100.0").message("0 to 100"))]
    pub percent: Option<f64>,
}

/// An error answer for a share of calls: `httpStatus` for HTTPRoutes, `grpcStatus` for
/// GRPCRoutes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.httpStatus) != has(self.grpcStatus)")
    .message("set exactly one of httpStatus and grpcStatus"))]
pub struct FaultAbort {
    /// HTTPRoutes: the status answered, 400 to 599.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 400 && self <= 599").message("400 to 599"))]
    pub http_status: Option<i32>,
    /// GRPCRoutes: the status name answered (`UNAVAILABLE`), any but `OK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self in ['CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', \
         'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', \
         'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', \
         'UNAUTHENTICATED']"
    ).message("a gRPC status name other than OK"))]
    pub grpc_status: Option<String>,
    /// Share of calls aborted, 0 to 100 in steps of 0.0001; 100 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 100.0").message("0 to 100"))]
    pub percent: Option<f64>,
}

impl FaultInjectionSpec {
    /// The file source's filter spec: the same JSON shape by design, so going through JSON
    /// keeps the two from drifting apart field by field.
    pub(crate) fn to_config(
        &self,
    ) -> Result<mesh_core::config::FaultInjectionSpec, serde_json::Error> {
        serde_json::to_value(self).and_then(serde_json::from_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_schema_carries_the_cel_rules() {
        let json = serde_json::to_string(&FaultInjection::crd()).expect("serializable");
        assert!(
            json.contains("has(self.delay) || has(self.abort)"),
            "{json}"
        );
        assert!(json.contains("has(self.httpStatus) != has(self.grpcStatus)"));
        assert!(json.contains(r#""kind":"FaultInjection""#));
    }

    #[test]
    fn the_spec_reads_as_the_files_filter() {
        let yaml = "\
apiVersion: policy.mesh.dev/v1alpha1
kind: FaultInjection
metadata: {name: flaky, namespace: default}
spec:
  delay: {fixedDelay: 100ms, percent: 10}
  abort: {httpStatus: 503, percent: 0.1}
";
        let fault: FaultInjection = serde_yaml::from_str(yaml).expect("parses");
        let config = fault.spec.to_config().expect("the file's shape");
        let delay = config.delay.expect("a delay");
        assert_eq!(delay.fixed_delay, "100ms");
        assert_eq!(delay.percent, Some(mesh_core::config::Percent(10.0)));
        let abort = config.abort.expect("an abort");
        assert_eq!(abort.http_status, Some(503));
        assert_eq!(abort.percent, Some(mesh_core::config::Percent(0.1)));
    }
}
