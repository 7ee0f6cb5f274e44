//! SPIFFE IDs and trust domains, parsed and validated by the SPIFFE ID specification.

use std::fmt;
use std::str::FromStr;

/// Why a SPIFFE ID or trust domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// Placeholder until implemented.
    #[error("invalid SPIFFE ID {0:?}")]
    Invalid(String),
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates `name` as a trust domain.
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        let _ = name;
        todo!()
    }

    /// The trust domain's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    trust_domain: TrustDomain,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(uri: &str) -> Result<Self, SpiffeIdError> {
        let _ = uri;
        todo!()
    }

    /// `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    pub fn from_service_account(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        let _ = (trust_domain, namespace, service_account);
        todo!()
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, with its leading `/`.
    pub fn path(&self) -> &str {
        todo!()
    }

    /// The namespace of an `/ns/<ns>/sa/<sa>` ID.
    pub fn namespace(&self) -> Option<&str> {
        todo!()
    }

    /// The service account of an `/ns/<ns>/sa/<sa>` ID.
    pub fn service_account(&self) -> Option<&str> {
        todo!()
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}
