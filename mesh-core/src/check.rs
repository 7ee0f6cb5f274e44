//! Field checks shared by config validation and wire-to-model conversion, so that the control
//! service and its clients refuse exactly the same things, with the same messages.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::SocketAddr;

use crate::error::FieldError;

pub(crate) mod fault;
pub(crate) mod hedging;
pub(crate) mod jwt;
pub(crate) mod policy;
pub(crate) mod rate_limit;
pub(crate) mod route;
use crate::dns::{check_dns_label, check_dns_subdomain};
use crate::snapshot::Endpoint;
use crate::spiffe::{SpiffeId, TrustDomain};

/// The largest endpoint or backend weight; bounds the sum of a weight table well inside `u64`.
pub(crate) const MAX_WEIGHT: u32 = 1_000_000;

/// Remembers where each key was first seen, to report duplicates with both places: by path
/// (`FirstSeen<K>`), or by index in one list (`FirstSeen<K, usize>`), so that a valid list of
/// endpoints formats no path at all.
#[derive(Debug)]
pub(crate) struct FirstSeen<K, At = String>(HashMap<K, At>);

impl<K: Eq + Hash, At: Clone> FirstSeen<K, At> {
    pub(crate) fn new() -> Self {
        Self(HashMap::new())
    }

    /// `None` the first time `key` is seen (at `at`); after that, where it was first seen.
    pub(crate) fn check<Q>(&mut self, key: K, at: &Q) -> Option<At>
    where
        Q: ToOwned<Owned = At> + ?Sized,
    {
        match self.0.entry(key) {
            std::collections::hash_map::Entry::Occupied(first) => Some(first.get().clone()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(at.to_owned());
                None
            }
        }
    }
}

/// Where one endpoint of a list is (`services[0].endpoints[3]`): formatted only for an error,
/// since validating a service of a thousand endpoints formatted a thousand paths (half of
/// validation's time) to report nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndpointAt<'a> {
    /// The list's path (`services[0].endpoints`).
    pub(crate) list: &'a str,
    /// The endpoint's index in it.
    pub(crate) index: usize,
}

impl std::fmt::Display for EndpointAt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.list, self.index)
    }
}

/// A DNS-1123 label such as a service name or namespace; `what` names it in the message.
pub(crate) fn dns_label(what: &str, value: &str) -> Result<(), String> {
    check_dns_label(value).map_err(|reason| format!("invalid {what} {value:?}: {reason}"))
}

/// The service named by `namespace` and `name` at `path` (the config's `services[0]` or the
/// wire's `destinations[0].service`), each part a DNS label; every error is pushed.
pub(crate) fn service_name(
    path: &str,
    namespace: &str,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<crate::snapshot::ServiceName> {
    let mut ok = true;
    if let Err(message) = dns_label("name", name) {
        errors.push(FieldError::new(format!("{path}.name"), message));
        ok = false;
    }
    if let Err(message) = dns_label("namespace", namespace) {
        errors.push(FieldError::new(format!("{path}.namespace"), message));
        ok = false;
    }
    ok.then(|| crate::snapshot::ServiceName {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// A route name: a DNS-1123 subdomain, as Kubernetes object names are.
pub(crate) fn route_name(value: &str) -> Result<(), String> {
    check_dns_subdomain(value).map_err(|reason| format!("invalid route name {value:?}: {reason}"))
}

/// An optional rule name: empty, or shaped like Gateway API's `SectionName` (a DNS subdomain).
pub(crate) fn rule_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_dns_subdomain(value).map_err(|reason| format!("invalid rule name {value:?}: {reason}"))
}

/// An address a client can dial: `ip:port`, with neither an unspecified IP nor port 0.
pub(crate) fn address(value: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = value
        .parse()
        .map_err(|_| format!("invalid socket address {value:?}"))?;
    if addr.port() == 0 {
        return Err(format!(
            "invalid socket address {value:?}: port 0 cannot be dialed"
        ));
    }
    if addr.ip().is_unspecified() {
        return Err(format!(
            "invalid socket address {value:?}: the unspecified address cannot be dialed"
        ));
    }
    Ok(addr)
}

/// An endpoint's weight: 1 to [`MAX_WEIGHT`] (an endpoint that should get nothing is removed).
pub(crate) fn endpoint_weight(weight: u32) -> Result<u32, String> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(weight)
    } else {
        Err(format!("weight {weight} is out of range 1 to {MAX_WEIGHT}"))
    }
}

/// A backend reference's weight: 0 (sends nothing) to [`MAX_WEIGHT`].
pub(crate) fn backend_weight(weight: u32) -> Result<u32, String> {
    if weight <= MAX_WEIGHT {
        Ok(weight)
    } else {
        Err(format!("weight {weight} is out of range 0 to {MAX_WEIGHT}"))
    }
}

/// An endpoint's identity: a SPIFFE ID, in `trust_domain` when one is required.
pub(crate) fn identity(
    value: &str,
    trust_domain: Option<&TrustDomain>,
) -> Result<SpiffeId, String> {
    let id = SpiffeId::parse(value).map_err(|e| e.to_string())?;
    match trust_domain {
        Some(td) if id.trust_domain() != td => Err(format!(
            "identity {value:?} is not in trust domain {:?}",
            td.as_str()
        )),
        _ => Ok(id),
    }
}

/// The fields of one endpoint, as the config and the wire both carry them.
pub(crate) struct EndpointFields<'a> {
    pub(crate) address: &'a str,
    /// Already defaulted: the caller turns "omitted" into 1.
    pub(crate) weight: u32,
    pub(crate) zone: &'a str,
    pub(crate) for_zones: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) identity: &'a str,
}

/// Checks one endpoint at `at` (`services[0].endpoints[1]`), reporting a duplicate address
/// against `addresses` (the list's); `None` when anything is wrong (the errors are in
/// `errors`).
pub(crate) fn endpoint(
    at: EndpointAt<'_>,
    fields: EndpointFields<'_>,
    trust_domain: Option<&TrustDomain>,
    addresses: &mut FirstSeen<SocketAddr, usize>,
    errors: &mut Vec<FieldError>,
) -> Option<Endpoint> {
    let address = match address(fields.address) {
        Ok(addr) => match addresses.check(addr, &at.index) {
            Some(first) => {
                let first = EndpointAt { index: first, ..at };
                errors.push(FieldError::new(
                    format!("{at}.address"),
                    format!("duplicate address \"{addr}\" (first at {first}.address)"),
                ));
                None
            }
            None => Some(addr),
        },
        Err(message) => {
            errors.push(FieldError::new(format!("{at}.address"), message));
            None
        }
    };
    let weight = endpoint_weight(fields.weight)
        .map_err(|message| errors.push(FieldError::new(format!("{at}.weight"), message)))
        .ok();
    let identity = identity(fields.identity, trust_domain)
        .map_err(|message| errors.push(FieldError::new(format!("{at}.identity"), message)))
        .ok();
    // Most endpoints have no hints: nothing to check, no path to format.
    let hints_fit = fields.for_zones.is_empty()
        || for_zones(&format!("{at}.forZones"), &fields.for_zones, errors);
    if !hints_fit {
        return None;
    }
    Some(Endpoint {
        address: address?,
        weight: weight?,
        zone: fields.zone.to_owned(),
        for_zones: fields.for_zones,
        labels: fields.labels,
        identity: identity?,
    })
}

/// The longest zone: 63 bytes (a Kubernetes label value, which zones come from).
pub const MAX_ZONE_BYTES: usize = 63;

/// The most topology hints an endpoint carries (EndpointSlice's own bound).
pub const MAX_ZONE_HINTS: usize = 8;

/// Checks an endpoint's topology hints at `path`: at most [`MAX_ZONE_HINTS`], each a zone of at
/// most [`MAX_ZONE_BYTES`]. False (with the errors in `errors`) when they do not fit.
pub(crate) fn for_zones(path: &str, zones: &[String], errors: &mut Vec<FieldError>) -> bool {
    let before = errors.len();
    if zones.len() > MAX_ZONE_HINTS {
        errors.push(FieldError::new(
            path,
            format!("more than {MAX_ZONE_HINTS} zones"),
        ));
    }
    for (i, zone) in zones.iter().enumerate() {
        if zone.len() > MAX_ZONE_BYTES {
            errors.push(FieldError::new(
                format!("{path}[{i}]"),
                format!("longer than {MAX_ZONE_BYTES} bytes"),
            ));
        }
    }
    errors.len() == before
}

/// A zone name at `path`, at most [`MAX_ZONE_BYTES`]; empty (unknown) when longer, with the
/// error in `errors`.
pub(crate) fn zone(path: &str, zone: String, errors: &mut Vec<FieldError>) -> String {
    if zone.len() > MAX_ZONE_BYTES {
        errors.push(FieldError::new(
            path,
            format!("longer than {MAX_ZONE_BYTES} bytes"),
        ));
        return String::new();
    }
    zone
}
