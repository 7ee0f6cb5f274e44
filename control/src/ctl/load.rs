//! Reading a control file exactly as the control service's file source does: the same size
//! bound, UTF-8 check, YAML alias budget, shape and validation (`crate::file`).

use std::path::{Path, PathBuf};

use mesh_core::TrustDomain;

use super::error::CtlError;
use crate::file::{self, ControlConfig, ControlFile, ParseError};

/// A control file as read: what was parsed of it, and whether the service would take it.
#[derive(Debug)]
pub struct Loaded {
    /// The file's path, for messages.
    pub path: PathBuf,
    /// The document as written, when it parsed (lints need its field paths).
    pub file: Option<ControlFile>,
    /// The validated config, or why the control service would refuse the file.
    pub config: Result<ControlConfig, ParseError>,
}

/// A control file the service would take: the document and its validated config.
#[derive(Debug)]
pub struct Valid {
    /// The document as written.
    pub file: ControlFile,
    /// The validated config.
    pub config: ControlConfig,
}

/// Reads and validates `path` against `trust_domain`; only a file that cannot be read is an
/// error here.
pub fn read(path: &Path, trust_domain: &TrustDomain) -> Result<Loaded, CtlError> {
    let bytes = file::read_bounded_blocking(path).map_err(|source| CtlError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parsed = file::text_of(&bytes).and_then(ControlFile::from_yaml);
    let (file, config) = match parsed {
        // What `file::parse` does, keeping the document for its field paths.
        Ok(document) => {
            let config = document
                .clone()
                .validate(trust_domain)
                .map_err(ParseError::Invalid);
            (Some(document), config)
        }
        Err(e) => (None, Err(e)),
    };
    Ok(Loaded {
        path: path.to_owned(),
        file,
        config,
    })
}

/// Lists the Kubernetes cluster of the current kubeconfig (`KUBECONFIG`, `~/.kube/config`, or
/// in a pod its service account) once, as the control service does at start, and returns the
/// config it would build, as a control file, with each object it would leave out and why.
#[cfg(feature = "kubernetes")]
pub fn read_kubernetes(trust_domain: &TrustDomain) -> Result<(Loaded, Vec<String>), CtlError> {
    let fail = |message: String| CtlError::Admin {
        target: "kubernetes".to_owned(),
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let (config, refused) = runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| fail(format!("no cluster: {e}")))?;
        let mut source = crate::k8s::KubernetesSource::new(client);
        source.sync_timeout = std::time::Duration::from_secs(30);
        crate::k8s::read_once(&source, trust_domain)
            .await
            .map_err(|e| fail(e.to_string()))
    })?;
    let json = serde_json::to_string(&config.spec())?;
    Ok((parse_document(&json, "kubernetes", trust_domain), refused))
}

/// A config document (JSON or YAML) read as a control file, named `source` in messages.
fn parse_document(text: &str, source: &str, trust_domain: &TrustDomain) -> Loaded {
    let (file, config) = match ControlFile::from_yaml(text) {
        Ok(document) => {
            let config = document
                .clone()
                .validate(trust_domain)
                .map_err(ParseError::Invalid);
            (Some(document), config)
        }
        Err(e) => (None, Err(e)),
    };
    Loaded {
        path: PathBuf::from(source),
        file,
        config,
    }
}

/// Reads the config the control service at `admin` (`host:port` of its admin port) has in
/// force, from `GET /config`, whatever its source (a file, or Kubernetes objects), and
/// validates it as a control file; `source` names it in messages.
pub fn read_live(admin: &str, trust_domain: &TrustDomain) -> Result<Loaded, CtlError> {
    let addr = super::admin_client::replicas(admin)?
        .into_iter()
        .next()
        .ok_or_else(|| CtlError::Admin {
            target: admin.to_owned(),
            message: "resolves to no address".to_owned(),
        })?;
    let json = super::admin_client::get(addr, "/config")?;
    // JSON is YAML: the document is read as a control file is.
    Ok(parse_document(
        &json,
        &format!("control {addr} /config"),
        trust_domain,
    ))
}

/// Reads `path` and insists that it is valid, for the commands that answer from it.
pub fn read_valid(path: &Path, trust_domain: &TrustDomain) -> Result<Valid, CtlError> {
    let loaded = read(path, trust_domain)?;
    match (loaded.file, loaded.config) {
        (Some(file), Ok(config)) => Ok(Valid { file, config }),
        (_, Err(source)) => Err(CtlError::Invalid {
            path: loaded.path,
            source,
        }),
        // A valid config always comes from a parsed document.
        (None, Ok(_)) => Err(CtlError::Invalid {
            path: loaded.path,
            source: ParseError::Syntax {
                line: None,
                column: None,
                message: "the file could not be parsed".to_owned(),
            },
        }),
    }
}
