//! Per-request explain: a caller that sends `x-mesh-explain: 1` gets response headers that say
//! what the mesh did with its call, without a debugger or a trace backend.
//!
//! - The caller's own mesh (the client side) adds, to the response it hands back:
//!   `x-mesh-route` (the route that matched, empty when the destination has none),
//!   `x-mesh-rule` (its rule, by index, and its name when it has one), `x-mesh-backend` (the
//!   service the call went to), `x-mesh-endpoint` (the replica that answered: address and
//!   SPIFFE ID), `x-mesh-tries` (how many tries were sent, resends and retries included) and,
//!   when the rule's fault injection picked the call, `x-mesh-fault` (`delay 100ms`,
//!   `abort HTTP 503`, or both).
//!   These are the caller's own facts: any request that asks gets them.
//! - The server's mesh adds `x-mesh-authz` (the authorization verdict with the policy and rule
//!   that decided it, as the denial message would name them), but only for callers whose
//!   verified identity the server's settings list (`MESH_EXPLAIN_TO`): the policies of a
//!   service are not every caller's business.
//!
//! For gRPC the facts travel as response headers (initial metadata). The header is passed on
//! to the server unchanged. Nothing is added to a request that does not ask.
//!
//! Every call records the same facts as span events at `debug` level (target `mesh`):
//! `routed` (route, rule, backend), `try answered` / `try failed` (endpoint, status or
//! error) on the client's span, `authorized` (the decision) on the server's.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request header that asks for an explanation.
pub const EXPLAIN_HEADER: HeaderName = HeaderName::from_static("x-mesh-explain");
/// The route that matched.
pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-mesh-route");
/// The rule that matched: its index, and its name when it has one (`1 canary`).
pub const RULE_HEADER: HeaderName = HeaderName::from_static("x-mesh-rule");
/// The backend service the call went to.
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-mesh-backend");
/// The endpoint that answered: `address identity`.
pub const ENDPOINT_HEADER: HeaderName = HeaderName::from_static("x-mesh-endpoint");
/// How many tries were sent.
pub const TRIES_HEADER: HeaderName = HeaderName::from_static("x-mesh-tries");
/// The faults a route's `FaultInjection` filter injected into the call.
pub const FAULT_HEADER: HeaderName = HeaderName::from_static("x-mesh-fault");
/// The server's authorization verdict.
pub const AUTHZ_HEADER: HeaderName = HeaderName::from_static("x-mesh-authz");

/// Whether a request asks for an explanation (`x-mesh-explain: 1` or `true`).
///
/// Every call of a client asks this: the header is found with
/// [`mesh_core::headers::first`], which scans a request's few headers rather than hashing.
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    let value = mesh_core::headers::first(headers, &EXPLAIN_HEADER);
    value.is_some_and(|v| matches!(v.as_bytes(), b"1" | b"true"))
}

/// Sets `name` to `value` on a response, replacing what a peer may have put there; a value
/// that cannot be a header (it never comes from outside) is left out.
pub(crate) fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_value_counts_with_few_headers_or_many() {
        for others in [0, 20] {
            let mut headers = HeaderMap::new();
            for i in 0..others {
                headers.insert(
                    HeaderName::try_from(format!("x-other-{i}")).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            headers.append(EXPLAIN_HEADER, HeaderValue::from_static("true"));
            headers.append(EXPLAIN_HEADER, HeaderValue::from_static("0"));
            assert!(wanted(&headers), "{others} other headers");
            headers.insert(EXPLAIN_HEADER, HeaderValue::from_static("no"));
            headers.append(EXPLAIN_HEADER, HeaderValue::from_static("1"));
            assert!(!wanted(&headers), "{others} other headers");
        }
    }

    #[test]
    fn only_a_yes_asks() {
        let mut headers = HeaderMap::new();
        assert!(!wanted(&headers));
        headers.insert(EXPLAIN_HEADER, HeaderValue::from_static("0"));
        assert!(!wanted(&headers));
        for yes in ["1", "true"] {
            headers.insert(EXPLAIN_HEADER, HeaderValue::from_static(yes));
            assert!(wanted(&headers));
        }
        set(&mut headers, ROUTE_HEADER, "api");
        set(&mut headers, ROUTE_HEADER, "bad\nvalue");
        assert_eq!(headers[ROUTE_HEADER], "api");
    }
}
