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
    let parsed = ControlFile::from_yaml(&json);
    let (file, config) = match parsed {
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
        path: PathBuf::from(format!("control {addr} /config")),
        file,
        config,
    })
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
