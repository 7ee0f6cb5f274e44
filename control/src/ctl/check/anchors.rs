//! Lint: trust anchors that have expired or expire within [`ANCHOR_WARNING_DAYS`] days.

use std::path::Path;
use std::time::SystemTime;

use mesh_core::TrustDomain;
use mesh_core::tls::TrustBundle;

use super::ANCHOR_WARNING_DAYS;
use crate::ctl::error::CtlError;
use crate::ctl::finding::Finding;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Reads the bundle at `path` as workloads read `MESH_TRUST_ANCHORS_FILE` and reports each
/// anchor that expires within [`ANCHOR_WARNING_DAYS`] of `now` (or has expired), at
/// `trustBundle[i]`.
pub(super) fn lint(
    path: &Path,
    trust_domain: &TrustDomain,
    now: SystemTime,
    out: &mut Vec<Finding>,
) -> Result<(), CtlError> {
    let pem = std::fs::read(path).map_err(|source| CtlError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bundle =
        TrustBundle::from_pem(trust_domain.clone(), &pem).map_err(|e| CtlError::Bundle {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let warn_before = i64::try_from(ANCHOR_WARNING_DAYS).unwrap_or(i64::MAX) * DAY;
    for (i, root) in bundle.roots().iter().enumerate() {
        let at = format!("trustBundle[{i}]");
        let cert = match x509_parser::parse_x509_certificate(root) {
            Ok((_, cert)) => cert,
            Err(e) => {
                out.push(Finding::error(at, format!("not an X.509 certificate: {e}")));
                continue;
            }
        };
        let not_after = cert.validity().not_after;
        let left = not_after.timestamp() - now;
        let date = not_after.to_datetime().date();
        let subject = cert.subject().to_string();
        if left <= 0 {
            out.push(Finding::warning(
                at,
                format!(
                    "anchor {subject:?} expired on {date}: no certificate chaining to it verifies"
                ),
            ));
        } else if left < warn_before {
            out.push(Finding::warning(
                at,
                format!(
                    "anchor {subject:?} expires on {date}, in {} day(s): add its successor to the bundle",
                    left / DAY
                ),
            ));
        }
    }
    Ok(())
}
