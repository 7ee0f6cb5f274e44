//! `meshctl check`: the control service's own verdict on a control file (every error with its
//! field path), then lints for what validates but hurts.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mesh_core::TrustDomain;
use serde::Serialize;

use super::error::CtlError;
use super::finding::{Finding, Severity};
use super::load;
use crate::file::ParseError;

mod anchors;
mod policies;
mod route_rules;
pub mod served;

/// Trust anchors that expire sooner than this are reported: 30 days.
pub const ANCHOR_WARNING_DAYS: u64 = 30;

/// What `check` is asked to look at.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The trust domain endpoint and policy identities must belong to.
    pub trust_domain: TrustDomain,
    /// A trust bundle (PEM) whose anchors' expiry to check.
    pub trust_bundle: Option<PathBuf>,
    /// The time expiry is measured from.
    pub now: SystemTime,
    /// The gRPC services the running servers report (from the control replicas), when
    /// asked to check against them.
    pub served: Option<served::Served>,
}

/// Everything `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The control file checked.
    pub file: String,
    /// Why the control service would refuse the file; empty when it would take it.
    pub errors: Vec<Finding>,
    /// What validates but probably is not what was meant.
    pub warnings: Vec<Finding>,
}

impl CheckReport {
    /// 0 when nothing was found (or only warnings and `warnings_ok`), else 1.
    pub fn exit_code(&self, warnings_ok: bool) -> u8 {
        if !self.errors.is_empty() || (!warnings_ok && !self.warnings.is_empty()) {
            1
        } else {
            0
        }
    }
}

/// Checks the control file at `path`. Only I/O errors (and an unusable trust bundle) are
/// `Err`; everything wrong with the file is in the report.
///
/// Lints run on a valid file only: they read the validated config, as the service would
/// serve it. The trust bundle is checked either way.
pub fn check(path: &Path, options: &CheckOptions) -> Result<CheckReport, CtlError> {
    let loaded = load::read(path, &options.trust_domain)?;
    check_loaded(&loaded, options)
}

/// Checks what `loaded` holds (a control file, or the config a control service has in force).
pub fn check_loaded(
    loaded: &load::Loaded,
    options: &CheckOptions,
) -> Result<CheckReport, CtlError> {
    let path = &loaded.path;
    let mut findings = Vec::new();
    match (&loaded.file, &loaded.config) {
        (Some(file), Ok(config)) => {
            route_rules::lint(file, &config.mesh, &mut findings);
            policies::lint(file, &config.mesh, &mut findings);
            if let Some(served) = &options.served {
                served::lint(file, served, &mut findings);
            }
        }
        (_, Err(ParseError::Invalid(errors))) => findings.extend(
            errors
                .errors()
                .iter()
                .map(|e| Finding::error(&e.path, &e.message)),
        ),
        (
            _,
            Err(ParseError::Syntax {
                line,
                column,
                message,
            }),
        ) => findings.push(Finding {
            line: *line,
            column: *column,
            ..Finding::error("", message)
        }),
        (_, Err(e @ ParseError::TooLarge { .. })) => {
            findings.push(Finding::error("", e.to_string()))
        }
        (None, Ok(_)) => {}
    }
    if let Some(bundle) = &options.trust_bundle {
        anchors::lint(bundle, &options.trust_domain, options.now, &mut findings)?;
    }
    let (errors, warnings) = findings
        .into_iter()
        .partition(|f| f.severity == Severity::Error);
    Ok(CheckReport {
        file: path.display().to_string(),
        errors,
        warnings,
    })
}
