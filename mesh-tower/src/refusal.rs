//! The mesh's own refusals: how a request the mesh answers itself (a failed call on the client,
//! a denied or oversized one on the server) says why, in the form its caller reads.
//!
//! A gRPC caller gets a "Trailers-Only" response (HTTP 200 with `grpc-status` and
//! `grpc-message` in the headers), which every gRPC client reads as that status; an HTTP caller
//! gets the status code with the reason in [`MESH_ERROR_HEADER`]. Shared by the client and the
//! server, so both speak the same way and neither imports the other.

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};

/// The header that carries the mesh's reason on HTTP error responses.
pub const MESH_ERROR_HEADER: &str = "x-mesh-error";

/// Makes `response` the mesh's refusal with `message`: for a gRPC caller a Trailers-Only
/// response with `code`, for an HTTP caller `status` with the message in
/// [`MESH_ERROR_HEADER`] (the body is the caller's to fill).
pub(crate) fn write_refusal<B>(
    response: &mut Response<B>,
    grpc: bool,
    code: tonic::Code,
    status: StatusCode,
    message: &str,
) {
    // Percent-encoding leaves only visible ASCII: always a valid header value.
    let value = HeaderValue::from_str(&percent_encode(message)).ok();
    let headers = response.headers_mut();
    if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(code as i32));
        if let Some(value) = value {
            headers.insert("grpc-message", value);
        }
    } else {
        if let Some(value) = value {
            headers.insert(MESH_ERROR_HEADER, value);
        }
        *response.status_mut() = status;
    }
}

/// Writes a gRPC status into `headers` (a response's trailers, or a Trailers-Only response's
/// headers): `grpc-status`, and `grpc-message` percent-encoded.
pub(crate) fn write_grpc_status(headers: &mut http::HeaderMap, code: tonic::Code, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    // Percent-encoding leaves only visible ASCII: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
}

/// A new refusal with an empty body: see [`write_refusal`].
pub(crate) fn refusal<R: Default>(
    grpc: bool,
    code: tonic::Code,
    status: StatusCode,
    message: &str,
) -> Response<R> {
    let mut response = Response::new(R::default());
    write_refusal(&mut response, grpc, code, status, message);
    response
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2): bytes outside printable ASCII, and
/// `%` itself.
pub(crate) fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("a%b\né"), "a%25b%0A%C3%A9");
    }

    #[test]
    fn grpc_and_http_callers_each_get_their_form() {
        let grpc: Response<()> = refusal(
            true,
            tonic::Code::PermissionDenied,
            StatusCode::FORBIDDEN,
            "denied by policy \"p\"",
        );
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "7");
        assert_eq!(grpc.headers()["grpc-message"], "denied by policy \"p\"");
        assert!(!grpc.headers().contains_key(MESH_ERROR_HEADER));

        let http: Response<()> = refusal(
            false,
            tonic::Code::PermissionDenied,
            StatusCode::FORBIDDEN,
            "denied",
        );
        assert_eq!(http.status(), StatusCode::FORBIDDEN);
        assert_eq!(http.headers()[MESH_ERROR_HEADER], "denied");
        assert!(!http.headers().contains_key("grpc-status"));
    }
}
