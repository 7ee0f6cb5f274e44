//! The one place where mesh errors become gRPC statuses.

use mesh_tower::error::find_in_chain;
use mesh_tower::{BoxError, CallError};
use tonic::Status;

/// The status a caller sees for a call that failed with an error rather than a response (the
/// client stack answers most failures with a response that already carries its status): a
/// [`CallError`] gets [`CallError::grpc_code`] and its message; a status already in the chain
/// is passed on as it is.
pub fn status_from_error(error: BoxError) -> Status {
    let error = match error.downcast::<Status>() {
        Ok(status) => return *status,
        Err(error) => error,
    };
    if let Some(call) = find_in_chain::<CallError>(error.as_ref()) {
        return Status::new(call.grpc_code(), call.to_string());
    }
    if let Some(status) = find_in_chain::<Status>(error.as_ref()) {
        return status.clone();
    }
    Status::from_error(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::snapshot::ServiceName;
    use tonic::Code;

    #[test]
    fn mesh_errors_map_to_unavailable_with_the_destination() {
        let name = ServiceName::new("default", "greeter").unwrap();
        let status = status_from_error(Box::new(CallError::NoEndpoints(name)));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "no endpoints for greeter.default");
    }

    #[test]
    fn a_status_passes_through() {
        let status = status_from_error(Box::new(Status::permission_denied("no")));
        assert_eq!(status.code(), Code::PermissionDenied);
    }
}
