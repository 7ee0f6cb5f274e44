//! The responses the mesh writes itself when a call fails before the destination answers: the
//! one place where a [`CallError`] becomes an HTTP status or a gRPC status.
//!
//! A gRPC caller gets a "Trailers-Only" response (HTTP 200 with `grpc-status` and
//! `grpc-message` in the headers), which every gRPC client reads as that status; an HTTP caller
//! gets the status code with the message as a plain-text body and in `x-mesh-error`.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};

use super::body::ResponseBody;
use crate::error::CallError;
use crate::refusal::write_refusal;

/// The mesh's own response to a call that failed with `error`.
pub(crate) fn failure(error: &CallError, grpc: bool) -> Response<ResponseBody> {
    let message = error.to_string();
    let mut response = Response::new(ResponseBody::empty());
    write_refusal(
        &mut response,
        grpc,
        error.grpc_code(),
        error.http_status(),
        &message,
    );
    if !grpc {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        *response.body_mut() = ResponseBody::full(Some(Bytes::from(message + "\n")));
    }
    response
}

/// Whether a response from an endpoint is a failure for retries and ejection purposes, with
/// the gRPC status read from its headers when it is a Trailers-Only response.
pub(crate) fn grpc_status(response: &Response<impl Sized>) -> Option<tonic::Code> {
    crate::telemetry::grpc_status(response.headers()).map(tonic::Code::from)
}

/// Whether `status` (HTTP) or `code` (gRPC) says the server side failed: what outlier ejection
/// counts.
pub(crate) fn is_server_failure(status: StatusCode, code: Option<tonic::Code>) -> bool {
    use tonic::Code;
    status.is_server_error()
        || matches!(
            code,
            Some(Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::snapshot::ServiceName;

    fn name() -> ServiceName {
        ServiceName::new("default", "greeter").unwrap()
    }

    #[test]
    fn each_failure_has_its_status() {
        let cases = [
            (
                CallError::NoRoute {
                    destination: name(),
                    request: "GET /x".into(),
                },
                404,
                tonic::Code::Unimplemented,
            ),
            (
                CallError::NoBackend {
                    destination: name(),
                    route: "r/0".into(),
                },
                500,
                tonic::Code::Unavailable,
            ),
            (
                CallError::NoEndpoints(name()),
                503,
                tonic::Code::Unavailable,
            ),
            (
                CallError::Timeout {
                    destination: name(),
                    after: std::time::Duration::from_millis(5),
                },
                504,
                tonic::Code::DeadlineExceeded,
            ),
        ];
        for (error, http, grpc) in cases {
            let response = failure(&error, false);
            assert_eq!(response.status().as_u16(), http, "{error}");
            let response = failure(&error, true);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(grpc_status(&response), Some(grpc), "{error}");
            assert!(
                response.headers()["grpc-message"]
                    .to_str()
                    .unwrap()
                    .contains("greeter.default")
            );
        }
    }
}
