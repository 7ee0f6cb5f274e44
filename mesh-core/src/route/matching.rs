//! Evaluating one match against a request, and the precedence key that ranks matches.

use std::borrow::Cow;

use http::HeaderMap;

use super::summary::RequestSummary;
use crate::snapshot::{
    GrpcRouteMatch, HeaderMatch, HttpRouteMatch, PathMatch, QueryParamMatch, ValueMatch,
};

/// A compiled match condition.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// An HTTPRoute match; `prefix` is the path prefix with any trailing `/` removed.
    Http {
        spec: HttpRouteMatch,
        prefix: Option<String>,
    },
    /// A GRPCRoute match.
    Grpc(GrpcRouteMatch),
}

/// The first condition of a match that a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mismatch {
    Path,
    Method,
    /// The header condition at this index.
    Header(usize),
    /// The query parameter condition at this index.
    QueryParam(usize),
    /// Not a gRPC request with a `/service/method` path.
    NotGrpc,
    GrpcService,
    GrpcMethod,
}

/// How a match ranks; larger is better. Field order is Gateway API's criteria order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HttpKey {
    /// 2 for `Exact`, 1 for `RegularExpression`, 0 for `PathPrefix`.
    pub(crate) path_type: u8,
    /// Characters of the path value (a prefix without its trailing `/`).
    pub(crate) path_chars: usize,
    pub(crate) method: bool,
    pub(crate) headers: usize,
    pub(crate) query_params: usize,
}

/// How a gRPC match ranks; larger is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GrpcKey {
    pub(crate) service_chars: usize,
    pub(crate) method_chars: usize,
    pub(crate) headers: usize,
}

/// A precedence key of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Http(HttpKey),
    Grpc(GrpcKey),
}

// === impl Condition ===

impl Condition {
    pub(crate) fn http(spec: &HttpRouteMatch) -> Self {
        let prefix = match &spec.path {
            // Gateway API ignores a trailing `/` in a prefix: `/v2/` matches `/v2` too.
            PathMatch::Prefix(p) => Some(p.trim_end_matches('/').to_owned()),
            _ => None,
        };
        Self::Http {
            spec: spec.clone(),
            prefix,
        }
    }

    pub(crate) fn key(&self) -> Key {
        match self {
            Self::Http { spec, prefix } => {
                let (path_type, path_chars) = match &spec.path {
                    PathMatch::Exact(v) => (2, v.chars().count()),
                    PathMatch::RegularExpression(p) => (1, p.as_str().chars().count()),
                    // `/` trims to the empty prefix, which still counts as one character.
                    PathMatch::Prefix(_) => {
                        (0, prefix.as_deref().map_or(0, |p| p.chars().count().max(1)))
                    }
                };
                Key::Http(HttpKey {
                    path_type,
                    path_chars,
                    method: spec.method.is_some(),
                    headers: spec.headers.len(),
                    query_params: spec.query_params.len(),
                })
            }
            Self::Grpc(spec) => {
                let chars = |v: Option<&ValueMatch>| v.map_or(0, |v| v.value().chars().count());
                let method = spec.method.as_ref();
                Key::Grpc(GrpcKey {
                    service_chars: chars(method.and_then(|m| m.service.as_ref())),
                    method_chars: chars(method.and_then(|m| m.method.as_ref())),
                    headers: spec.headers.len(),
                })
            }
        }
    }

    /// `Ok` when every condition holds, else the first that does not.
    pub(crate) fn check(&self, request: &RequestSummary<'_>) -> Result<(), Mismatch> {
        match self {
            Self::Http { spec, prefix } => {
                let path_ok = match (&spec.path, prefix) {
                    (PathMatch::Exact(v), _) => request.path() == v,
                    (PathMatch::Prefix(_), Some(prefix)) => segment_prefix(request.path(), prefix),
                    (PathMatch::RegularExpression(p), _) => p.is_match(request.path()),
                    (PathMatch::Prefix(_), None) => false,
                };
                if !path_ok {
                    return Err(Mismatch::Path);
                }
                if let Some(method) = &spec.method
                    && method != request.method()
                {
                    return Err(Mismatch::Method);
                }
                headers_match(&spec.headers, request.headers())?;
                for (i, q) in spec.query_params.iter().enumerate() {
                    if !query_matches(q, request.query()) {
                        return Err(Mismatch::QueryParam(i));
                    }
                }
                Ok(())
            }
            Self::Grpc(spec) => {
                if let Some(m) = &spec.method {
                    let Some(grpc) = request.grpc() else {
                        return Err(Mismatch::NotGrpc);
                    };
                    if let Some(service) = &m.service
                        && !service.is_match(grpc.service)
                    {
                        return Err(Mismatch::GrpcService);
                    }
                    if let Some(method) = &m.method
                        && !method.is_match(grpc.method)
                    {
                        return Err(Mismatch::GrpcMethod);
                    }
                }
                headers_match(&spec.headers, request.headers())
            }
        }
    }

    /// The header conditions, for explanations.
    pub(crate) fn headers(&self) -> &[HeaderMatch] {
        match self {
            Self::Http { spec, .. } => &spec.headers,
            Self::Grpc(spec) => &spec.headers,
        }
    }
}

/// Whether `path` starts with the whole segments of `prefix` (given without a trailing `/`).
fn segment_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn headers_match(conditions: &[HeaderMatch], headers: &HeaderMap) -> Result<(), Mismatch> {
    for (i, h) in conditions.iter().enumerate() {
        if !header_matches(h, headers) {
            return Err(Mismatch::Header(i));
        }
    }
    Ok(())
}

/// A header with several values is compared as its values joined with `,` (RFC 9110).
fn header_matches(condition: &HeaderMatch, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&condition.name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let mut rest = values.peekable();
    if rest.peek().is_none() {
        return match &condition.value {
            ValueMatch::Exact(v) => first.as_bytes() == v.as_bytes(),
            ValueMatch::RegularExpression(p) => first.to_str().is_ok_and(|s| p.is_match(s)),
        };
    }
    match &condition.value {
        ValueMatch::Exact(v) => {
            // Walk the expected value piece by piece instead of joining.
            let mut expected = v.as_bytes();
            let mut pieces = std::iter::once(first).chain(rest);
            let mut first_piece = true;
            pieces.all(|piece| {
                if !first_piece {
                    match expected.strip_prefix(b",") {
                        Some(tail) => expected = tail,
                        None => return false,
                    }
                }
                first_piece = false;
                match expected.strip_prefix(piece.as_bytes()) {
                    Some(tail) => {
                        expected = tail;
                        true
                    }
                    None => false,
                }
            }) && expected.is_empty()
        }
        ValueMatch::RegularExpression(p) => {
            // Rare (a repeated header under a pattern match): joining allocates.
            let mut joined = String::new();
            for (i, piece) in std::iter::once(first).chain(rest).enumerate() {
                let Ok(piece) = piece.to_str() else {
                    return false;
                };
                if i > 0 {
                    joined.push(',');
                }
                joined.push_str(piece);
            }
            p.is_match(&joined)
        }
    }
}

/// The first parameter named as `condition` says (names and values percent-decoded) must match.
fn query_matches(condition: &QueryParamMatch, query: Option<&str>) -> bool {
    let Some(query) = query else {
        return false;
    };
    let found = query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        decoded_eq(name, &condition.name).then_some(value)
    });
    let Some(value) = found else {
        return false;
    };
    match &condition.value {
        ValueMatch::Exact(v) => decoded_eq(value, v),
        ValueMatch::RegularExpression(p) => match decode(value) {
            Some(decoded) => p.is_match(&decoded),
            None => false,
        },
    }
}

/// The decoded bytes of a query component: `%XX` escapes and `+` for a space.
fn decoded_bytes(raw: &str) -> impl Iterator<Item = Option<u8>> + '_ {
    let mut bytes = raw.bytes();
    std::iter::from_fn(move || {
        let b = bytes.next()?;
        Some(match b {
            b'+' => Some(b' '),
            b'%' => {
                let hi = bytes.next().and_then(|h| (h as char).to_digit(16));
                let lo = bytes.next().and_then(|l| (l as char).to_digit(16));
                match (hi, lo) {
                    // Two hex digits make one byte.
                    (Some(hi), Some(lo)) => Some((hi * 16 + lo) as u8),
                    _ => None,
                }
            }
            b => Some(b),
        })
    })
}

/// Whether `raw`, decoded, equals `expected`, without allocating. A bad escape never matches.
fn decoded_eq(raw: &str, expected: &str) -> bool {
    let mut expected = expected.bytes();
    for b in decoded_bytes(raw) {
        match (b, expected.next()) {
            (Some(b), Some(e)) if b == e => {}
            _ => return false,
        }
    }
    expected.next().is_none()
}

/// `raw` decoded; borrowed when it has nothing to decode. `None` for bad escapes or UTF-8.
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw));
    }
    let bytes: Option<Vec<u8>> = decoded_bytes(raw).collect();
    String::from_utf8(bytes?).ok().map(Cow::Owned)
}
