//! GAMMA routes: HTTPRoute and GRPCRoute objects whose `parentRefs` name a Service, turned into
//! the file source's [`RouteSpec`].
//!
//! Both kinds are first read into one loose shape ([`GammaRoute`]) by way of their JSON form:
//! their rules differ only in the match and filter fields, and mesh-core's route model already
//! has the Gateway API's JSON shape for matches, header modifiers and timeouts, so those pass
//! through as they are. What the mesh cannot carry is refused with a reason rather than
//! dropped, so that a route never does less than it says without its status saying so:
//! filters other than the header modifiers, `RequestMirror` and an `ExtensionRef` to one of
//! our `FaultInjection` resources, backend filters, and backends that are not Services.
//!
//! An `ExtensionRef` to a `FaultInjection` that does not exist is not skipped: Gateway API
//! requires that "requests that would have been processed by that filter MUST receive a HTTP
//! error response", so the rule keeps its matches and loses its backends, which answers HTTP
//! 500 (gRPC `UNAVAILABLE`) as a rule without a valid backend does; the route's
//! `ResolvedRefs` condition says which resource is missing (reason `FilterNotFound`).
//!
//! What is taken from the spec (GAMMA, GEP-1426 and GEP-1686):
//! - a parent is a Service when `kind: Service` and `group` is `""` or `core`; its namespace
//!   is the route's own when omitted; `port`, when given, must be one of the Service's ports,
//!   and the route then applies to calls to that port only;
//! - a route in the Service's namespace is a *producer* route and applies to every client;
//!   a route in another namespace is a *consumer* route, which applies only to clients in
//!   the route's namespace, in place of the producer routes (each subscriber's snapshot is
//!   projected for its namespace);
//! - `hostnames` does not apply to mesh routes and is ignored.
//!
//! Hedging, which the Gateway API has no field for, is the annotation [`HEDGING_ANNOTATION`]
//! on the route: the control file's `hedging` block (YAML or JSON), for every rule of the
//! route (a rule hedged alone goes in a route of its own). A value that does not parse, or
//! that validation refuses, refuses the route with the reason in its status.

use mesh_core::config::{
    BackendRefSpec, CreationTimestamp, FaultInjectionSpec, FilterSpec, HedgingSpec,
    MirrorBackendRefSpec, RequestMirrorSpec, RouteRuleSpec, RouteSpec,
};
use serde::Deserialize;
use serde_json::Value;

/// Route annotation: a hedging policy for every rule of the route, as the control file's
/// `hedging` block (`{maxAttempts: 2, delay: p95}`).
pub(crate) const HEDGING_ANNOTATION: &str = "mesh.dev/hedging";

/// `http` or `grpc`, as [`RouteSpec::kind`] spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RouteKind {
    /// An HTTPRoute.
    Http,
    /// A GRPCRoute.
    Grpc,
}

/// A route of either kind, reduced to what the mesh reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GammaRoute {
    pub(crate) kind: RouteKind,
    /// `metadata.generation`, for status.
    pub(crate) generation: Option<i64>,
    /// `metadata.creationTimestamp`, RFC 3339.
    pub(crate) created: Option<String>,
    /// The [`HEDGING_ANNOTATION`], as written.
    pub(crate) hedging: Option<String>,
    pub(crate) spec: GammaSpec,
}

/// The parts of the route's spec the mesh uses; unknown fields are ignored on purpose (the
/// typed objects were already checked by the API server and by the gateway-api types).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GammaSpec {
    #[serde(default)]
    pub(crate) parent_refs: Vec<ParentRef>,
    #[serde(default)]
    pub(crate) rules: Vec<GammaRule>,
}

/// A `parentRef` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) section_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GammaRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    matches: Vec<Value>,
    #[serde(default)]
    filters: Vec<GammaFilter>,
    #[serde(default)]
    backend_refs: Vec<GammaBackendRef>,
    #[serde(default)]
    timeouts: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GammaFilter {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    request_header_modifier: Option<Value>,
    #[serde(default)]
    response_header_modifier: Option<Value>,
    #[serde(default)]
    request_mirror: Option<GammaMirror>,
    #[serde(default)]
    extension_ref: Option<ExtensionRef>,
}

/// A filter's `extensionRef` (a `LocalObjectReference`: in the route's namespace).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct ExtensionRef {
    group: String,
    kind: String,
    name: String,
}

/// The API group of the mesh's own resources.
pub(crate) const MESH_GROUP: &str = "policy.mesh.dev";
/// The kind an `ExtensionRef` names for fault injection.
pub(crate) const FAULT_INJECTION_KIND: &str = "FaultInjection";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GammaMirror {
    backend_ref: ObjectRef,
    #[serde(default)]
    percent: Option<i32>,
    #[serde(default)]
    fraction: Option<Fraction>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Fraction {
    numerator: i32,
    #[serde(default)]
    denominator: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GammaBackendRef {
    #[serde(flatten)]
    target: ObjectRef,
    #[serde(default)]
    weight: Option<i32>,
    #[serde(default)]
    filters: Vec<Value>,
}

/// Why a route (or one of its parents) cannot be carried: a Gateway API condition reason
/// and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `UnsupportedValue`, `InvalidKind`, `NoMatchingParent`, ...
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

// === impl GammaRoute ===

impl GammaRoute {
    /// Reads a typed route through its JSON form. `spec` is the route's `.spec`.
    pub(crate) fn from_parts(
        kind: RouteKind,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        spec: Value,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind,
            generation: meta.generation,
            created: meta
                .creation_timestamp
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            hedging: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(HEDGING_ANNOTATION))
                .map(|v| v.trim().to_owned()),
            spec: serde_json::from_value(spec)?,
        })
    }

    /// The route as the file source would hold it under its parent service, named `name`;
    /// `namespace` is the route's own (the default of its backend references). `faults`
    /// looks up a `FaultInjection` of that namespace by name.
    pub(crate) fn to_spec(
        &self,
        name: &str,
        namespace: &str,
        faults: &dyn Fn(&str) -> Option<FaultInjectionSpec>,
    ) -> Result<RouteSpec, Refusal> {
        let hedging = self
            .hedging
            .as_deref()
            .map(serde_yaml::from_str::<HedgingSpec>)
            .transpose()
            .map_err(|e| {
                Refusal::new(
                    "UnsupportedValue",
                    format!("metadata.annotations[{HEDGING_ANNOTATION}]: {e}"),
                )
            })?;
        let rules = self
            .spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let mut spec = rule_spec(i, rule, namespace, faults)?;
                spec.hedging.clone_from(&hedging);
                Ok(spec)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RouteSpec {
            name: name.to_owned(),
            // Where it attaches is the caller's to say (`ClusterIndex::attach`).
            namespace: None,
            port: None,
            kind: Some(
                match self.kind {
                    RouteKind::Http => "http",
                    RouteKind::Grpc => "grpc",
                }
                .to_owned(),
            ),
            creation_timestamp: self.created.clone().map(CreationTimestamp::Rfc3339),
            rules,
        })
    }

    /// The names of the `FaultInjection` resources the route's filters refer to (in the
    /// route's namespace).
    pub(crate) fn fault_refs(&self) -> impl Iterator<Item = &str> {
        self.spec
            .rules
            .iter()
            .flat_map(|rule| &rule.filters)
            .filter_map(|f| f.extension_ref.as_ref())
            .filter(|r| r.is_fault_injection())
            .map(|r| r.name.as_str())
    }

    /// Every backend (and mirror) Service the route names, as `(namespace, name)`, with the
    /// route's namespace filled in.
    pub(crate) fn referenced_services(&self, namespace: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for rule in &self.spec.rules {
            let mirrors = rule
                .filters
                .iter()
                .filter_map(|f| f.request_mirror.as_ref());
            for target in rule
                .backend_refs
                .iter()
                .map(|b| &b.target)
                .chain(mirrors.map(|m| &m.backend_ref))
            {
                if is_service(target.group.as_deref(), target.kind.as_deref(), true) {
                    let ns = target.namespace.as_deref().unwrap_or(namespace);
                    out.push((ns.to_owned(), target.name.clone()));
                }
            }
        }
        out
    }
}

// === impl ParentRef ===

impl ParentRef {
    /// Whether this parent is a Service (GAMMA) rather than a Gateway.
    pub(crate) fn is_service(&self) -> bool {
        // A parentRef's kind defaults to Gateway and its group to the Gateway API's.
        is_service(self.group.as_deref(), self.kind.as_deref(), false)
    }
}

/// Whether a reference is to a core Service. Backend references default to a Service;
/// parent references default to a Gateway.
fn is_service(group: Option<&str>, kind: Option<&str>, defaults_to_service: bool) -> bool {
    let group_ok = match group {
        Some(g) => g.is_empty() || g == "core",
        None => defaults_to_service,
    };
    let kind_ok = match kind {
        Some(k) => k == "Service",
        None => defaults_to_service,
    };
    group_ok && kind_ok
}

impl ExtensionRef {
    fn is_fault_injection(&self) -> bool {
        self.group == MESH_GROUP && self.kind == FAULT_INJECTION_KIND
    }
}

fn rule_spec(
    i: usize,
    rule: &GammaRule,
    namespace: &str,
    faults: &dyn Fn(&str) -> Option<FaultInjectionSpec>,
) -> Result<RouteRuleSpec, Refusal> {
    let at = |field: &str| format!("spec.rules[{i}].{field}");
    let matches = rule
        .matches
        .iter()
        .enumerate()
        .map(|(j, m)| {
            serde_json::from_value(m.clone()).map_err(|e| {
                Refusal::new(
                    "UnsupportedValue",
                    format!("{}: {e}", at(&format!("matches[{j}]"))),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A filter that names a missing resource is not skipped: the rule answers with an error.
    let mut unresolved = false;
    let mut filters = Vec::with_capacity(rule.filters.len());
    for (j, f) in rule.filters.iter().enumerate() {
        match filter_spec(&at(&format!("filters[{j}]")), f, faults)? {
            Some(spec) => filters.push(spec),
            None => unresolved = true,
        }
    }
    let backend_refs = rule
        .backend_refs
        .iter()
        .enumerate()
        .map(|(j, b)| {
            let path = at(&format!("backendRefs[{j}]"));
            if !b.filters.is_empty() {
                return Err(Refusal::new(
                    "UnsupportedValue",
                    format!("{path}.filters: backend filters are not supported"),
                ));
            }
            let target = service_ref(&path, &b.target)?;
            Ok(BackendRefSpec {
                name: target.name,
                namespace: target.namespace.or_else(|| Some(namespace.to_owned())),
                port: target.port,
                weight: Some(non_negative(
                    &format!("{path}.weight"),
                    b.weight.unwrap_or(1),
                )?),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // No backend: the rule answers 500 (gRPC UNAVAILABLE), as Gateway API requires.
    let backend_refs = if unresolved { Vec::new() } else { backend_refs };
    let timeouts = rule
        .timeouts
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| Refusal::new("UnsupportedValue", format!("{}: {e}", at("timeouts"))))?;
    Ok(RouteRuleSpec {
        name: rule.name.clone().unwrap_or_default(),
        matches,
        filters,
        backend_refs,
        timeouts,
        retry: None,
        // From the route's annotation (see `GammaRoute::to_spec`).
        hedging: None,
    })
}

/// The filter in the file's shape; `None` for an `ExtensionRef` to a `FaultInjection` that
/// does not exist.
fn filter_spec(
    path: &str,
    filter: &GammaFilter,
    faults: &dyn Fn(&str) -> Option<FaultInjectionSpec>,
) -> Result<Option<FilterSpec>, Refusal> {
    let modifier = |value: &Option<Value>, field: &str| {
        value
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Refusal::new("UnsupportedValue", format!("{path}.{field}: {e}")))
    };
    let mut spec = FilterSpec {
        kind: filter.kind.clone(),
        ..FilterSpec::default()
    };
    match filter.kind.as_str() {
        "RequestHeaderModifier" => {
            spec.request_header_modifier =
                modifier(&filter.request_header_modifier, "requestHeaderModifier")?;
        }
        "ResponseHeaderModifier" => {
            spec.response_header_modifier =
                modifier(&filter.response_header_modifier, "responseHeaderModifier")?;
        }
        "RequestMirror" => {
            let Some(mirror) = &filter.request_mirror else {
                return Err(Refusal::new(
                    "UnsupportedValue",
                    format!("{path}.requestMirror: required by type RequestMirror"),
                ));
            };
            let target = service_ref(
                &format!("{path}.requestMirror.backendRef"),
                &mirror.backend_ref,
            )?;
            let percent = match (&mirror.percent, &mirror.fraction) {
                (Some(p), _) => Some(non_negative(&format!("{path}.requestMirror.percent"), *p)?),
                (None, Some(f)) => Some(fraction_percent(
                    &format!("{path}.requestMirror.fraction"),
                    f,
                )?),
                (None, None) => None,
            };
            spec.request_mirror = Some(RequestMirrorSpec {
                backend_ref: target,
                percent,
            });
        }
        "ExtensionRef" => {
            let Some(target) = &filter.extension_ref else {
                return Err(Refusal::new(
                    "UnsupportedValue",
                    format!("{path}.extensionRef: required by type ExtensionRef"),
                ));
            };
            if !target.is_fault_injection() {
                return Err(Refusal::new(
                    "UnsupportedValue",
                    format!(
                        "{path}.extensionRef: {}/{} is not supported by the mesh \
                         (it knows {MESH_GROUP}/{FAULT_INJECTION_KIND})",
                        target.group, target.kind
                    ),
                ));
            }
            let Some(fault) = faults(&target.name) else {
                return Ok(None);
            };
            spec.kind = FAULT_INJECTION_KIND.to_owned();
            spec.fault_injection = Some(fault);
        }
        other => {
            return Err(Refusal::new(
                "UnsupportedValue",
                format!("{path}.type: filter {other:?} is not supported by the mesh"),
            ));
        }
    }
    Ok(Some(spec))
}

/// A Service reference; anything else cannot be resolved by the mesh.
fn service_ref(path: &str, target: &ObjectRef) -> Result<MirrorBackendRefSpec, Refusal> {
    if !is_service(target.group.as_deref(), target.kind.as_deref(), true) {
        return Err(Refusal::new(
            "InvalidKind",
            format!(
                "{path}: only core Services can be backends (got group {:?}, kind {:?})",
                target.group.as_deref().unwrap_or(""),
                target.kind.as_deref().unwrap_or("Service")
            ),
        ));
    }
    Ok(MirrorBackendRefSpec {
        name: target.name.clone(),
        namespace: target.namespace.clone(),
        port: target
            .port
            .map(|p| non_negative(&format!("{path}.port"), p))
            .transpose()?,
    })
}

fn non_negative(path: &str, value: i32) -> Result<u32, Refusal> {
    u32::try_from(value)
        .map_err(|_| Refusal::new("UnsupportedValue", format!("{path}: {value} is negative")))
}

/// A mirror fraction as a whole percentage; one that is not a whole percentage is refused
/// rather than rounded (a 1/1000 sample must not become 0 % or 1 %).
fn fraction_percent(path: &str, fraction: &Fraction) -> Result<u32, Refusal> {
    let denominator = fraction.denominator.unwrap_or(100);
    let numerator = fraction.numerator;
    if denominator <= 0 || numerator < 0 || numerator > denominator {
        return Err(Refusal::new(
            "UnsupportedValue",
            format!("{path}: {numerator}/{denominator} is not a fraction of at most 1"),
        ));
    }
    let scaled = i64::from(numerator) * 100;
    if scaled % i64::from(denominator) != 0 {
        return Err(Refusal::new(
            "UnsupportedValue",
            format!("{path}: {numerator}/{denominator} is not a whole percentage"),
        ));
    }
    non_negative(
        path,
        i32::try_from(scaled / i64::from(denominator)).unwrap_or(0),
    )
}
