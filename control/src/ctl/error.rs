//! Why `meshctl` could not do what it was asked: the errors that exit with status 2.

use std::path::PathBuf;

use mesh_core::snapshot::{DestinationKey, ServiceNameError};

use crate::file::ParseError;

/// A usage or I/O error: `meshctl` prints it and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `routes` and `explain` need a valid control file; `check` says what is wrong.
    #[error(
        "{} is not a valid control file (`meshctl check --config {}` lists every problem): {source}",
        path.display(),
        path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why the control service would refuse it.
        source: ParseError,
    },
    /// A destination that is not `name.namespace[:port]`.
    #[error(transparent)]
    Destination(#[from] ServiceNameError),
    /// A destination the control file does not have.
    #[error("unknown destination {0}: the control file has no such service (or port)")]
    UnknownDestination(DestinationKey),
    /// A URL that `explain` cannot take apart.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--jwt-claims` that is not a JSON object.
    #[error("--jwt-claims: not a JSON object: {0}")]
    Claims(String),
    /// An HTTP method that is not a token.
    #[error("invalid HTTP method {0:?}")]
    Method(String),
    /// A `-H` that is not `name: value`.
    #[error("invalid header {0:?}: expected 'name: value'")]
    Header(String),
    /// A `--grpc` that is not `service/Method`.
    #[error("invalid gRPC method {0:?}: expected package.Service/Method")]
    GrpcMethod(String),
    /// A trust bundle that is not PEM certificates.
    #[error("trust bundle {}: {message}", path.display())]
    Bundle {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A control replica's admin port, or a workload, could not be read.
    #[error("{target}: {message}")]
    Admin {
        /// The address (or name) asked.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The arguments ask for something this build or command cannot do.
    #[error("{0}")]
    Usage(&'static str),
    /// The JSON output could not be written.
    #[error("cannot encode the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
}
