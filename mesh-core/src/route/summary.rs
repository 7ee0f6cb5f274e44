//! The small view of a request that routing decisions look at.

use http::{HeaderMap, Method, Uri};

/// What routing needs to know about a request, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct RequestSummary<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    is_grpc: bool,
    grpc: Option<GrpcPath<'a>>,
}

/// A gRPC request's `/package.Service/Method` path, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcPath<'a> {
    /// The fully qualified service (`helloworld.Greeter`).
    pub service: &'a str,
    /// The method (`SayHello`).
    pub method: &'a str,
}

impl<'a> GrpcPath<'a> {
    /// Splits `/service/method`; `None` unless both parts are there and non-empty.
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        // Exactly one '/' after the first. Counting is one vectorized pass over a path of a
        // few dozen bytes and finding it a short loop, where `split_once` and `contains` each
        // set up a general search (about 240 instructions a call together, under callgrind).
        let bytes = rest.as_bytes();
        if bytes.iter().filter(|&&byte| byte == b'/').count() != 1 {
            return None;
        }
        let at = bytes.iter().position(|&byte| byte == b'/')?;
        // `at` is the index of an ASCII '/', so both sides are on character boundaries.
        let (service, method) = (&rest[..at], &rest[at + 1..]);
        if service.is_empty() || method.is_empty() {
            return None;
        }
        Some(Self { service, method })
    }
}

/// Whether a request with these headers is gRPC: its `content-type` starts with
/// `application/grpc` (the one test the mesh uses everywhere, client and server).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    is_grpc_content_type(crate::headers::first(headers, &http::header::CONTENT_TYPE))
}

/// [`is_grpc`] for a `content-type` value already found.
pub fn is_grpc_content_type(content_type: Option<&http::HeaderValue>) -> bool {
    content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<'a> RequestSummary<'a> {
    /// A summary of a request with this method, URI and headers. The request is gRPC when its
    /// `content-type` starts with `application/grpc`.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self::with_grpc(method, uri, headers, is_grpc(headers))
    }

    /// [`RequestSummary::new`] for a request already known to be gRPC or not (by
    /// [`is_grpc`]): the request path reads its `content-type` once.
    pub fn with_grpc(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        is_grpc: bool,
    ) -> Self {
        let path = match uri.path() {
            // An authority-form or empty URI has no path; route it as `/`.
            "" => "/",
            path => path,
        };
        Self {
            method,
            path,
            query: uri.query(),
            headers,
            is_grpc,
            grpc: if is_grpc { GrpcPath::parse(path) } else { None },
        }
    }

    /// A summary of `request`.
    pub fn from_request<B>(request: &'a http::Request<B>) -> Self {
        Self::new(request.method(), request.uri(), request.headers())
    }

    /// A summary of `request`, already known to be gRPC or not (see
    /// [`RequestSummary::with_grpc`]).
    pub fn from_request_with_grpc<B>(request: &'a http::Request<B>, is_grpc: bool) -> Self {
        Self::with_grpc(request.method(), request.uri(), request.headers(), is_grpc)
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The headers (gRPC metadata).
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// Whether this is a gRPC request.
    pub fn is_grpc(&self) -> bool {
        self.is_grpc
    }

    /// The gRPC service and method, for a gRPC request with a well-formed path.
    pub fn grpc(&self) -> Option<GrpcPath<'a>> {
        self.grpc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_path_splits_into_service_and_method_or_is_refused() {
        let parsed = GrpcPath::parse("/helloworld.Greeter/SayHello").unwrap();
        assert_eq!(
            (parsed.service, parsed.method),
            ("helloworld.Greeter", "SayHello")
        );
        let multibyte = GrpcPath::parse("/grüße.Dienst/Grüßen").unwrap();
        assert_eq!(
            (multibyte.service, multibyte.method),
            ("grüße.Dienst", "Grüßen")
        );
        for refused in [
            "",
            "/",
            "//",
            "helloworld.Greeter/SayHello",
            "/helloworld.Greeter",
            "/helloworld.Greeter/",
            "//SayHello",
            "/a/b/c",
            "/helloworld.Greeter/SayHello/",
        ] {
            assert_eq!(GrpcPath::parse(refused), None, "{refused:?}");
        }
    }
}
