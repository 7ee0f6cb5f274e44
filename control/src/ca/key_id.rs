//! Key identifiers as hex: a root's subject key identifier and the authority key identifier a
//! leaf names, so that which root signed a leaf can be shown and compared without verifying.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::ParsedExtension;

/// The subject key identifier of `cert` (a CA certificate), hex; `None` without one.
pub(crate) fn subject_key_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).ok()?;
    x509.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(hex(id.0)),
            _ => None,
        })
}

/// The authority key identifier `cert` (a leaf) names: its issuer's key, hex; `None` without
/// one.
pub(crate) fn authority_key_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).ok()?;
    x509.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| hex(id.0))
            }
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
