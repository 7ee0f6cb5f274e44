//! SPIFFE IDs and trust domains, parsed and validated by the SPIFFE ID specification.
//!
//! The rules are those of the [SPIFFE ID standard]: the scheme is exactly `spiffe://`; the trust
//! domain is 1 to 255 of `[a-z0-9.-_]`; the path is optional, and when present is made of
//! non-empty segments of `[a-zA-Z0-9.-_]` that are not `.` or `..`, with no trailing slash; there
//! is no port, userinfo, query, fragment or percent-encoding; the whole ID is at most 2048 bytes.
//! Every refusal says which rule was broken and repeats the input.
//!
//! [SPIFFE ID standard]: https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dns::check_dns_label;

/// The scheme prefix, lowercase only (the standard's own implementations refuse `SPIFFE://`).
const SCHEME: &str = "spiffe://";
/// The standard's limit on a whole SPIFFE ID, in bytes.
const MAX_ID_LEN: usize = 2048;
/// The standard's limit on a trust domain name, in characters (all ASCII, so bytes).
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// What was being parsed when a [`SpiffeIdError`] arose, with the text as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A whole SPIFFE ID.
    SpiffeId(String),
    /// A bare trust domain name.
    TrustDomain(String),
}

impl Input {
    /// The text that was refused.
    pub fn as_str(&self) -> &str {
        match self {
            Self::SpiffeId(s) | Self::TrustDomain(s) => s,
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SpiffeId(s) => write!(f, "SPIFFE ID {s:?}"),
            Self::TrustDomain(s) => write!(f, "trust domain {s:?}"),
        }
    }
}

/// Why a SPIFFE ID or trust domain was refused; one variant per rule of the standard.
///
/// Messages read `invalid SPIFFE ID "spiffe://Foo/x": trust domain must be lowercase`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// Nothing was given.
    #[error("invalid {input}: empty")]
    Empty {
        /// What was refused.
        input: Input,
    },
    /// Longer than the standard's 2048 bytes.
    #[error("invalid {input}: {len} bytes long, at most 2048 are allowed")]
    TooLong {
        /// What was refused, cut to its first 64 characters so that messages stay readable.
        input: Input,
        /// Its full length in bytes.
        len: usize,
    },
    /// Does not start with exactly `spiffe://`.
    #[error("invalid {input}: must start with \"spiffe://\" (lowercase)")]
    Scheme {
        /// What was refused.
        input: Input,
    },
    /// No trust domain after the scheme.
    #[error("invalid {input}: trust domain is empty")]
    EmptyTrustDomain {
        /// What was refused.
        input: Input,
    },
    /// A trust domain over 255 characters.
    #[error("invalid {input}: trust domain is {len} characters long, at most 255 are allowed")]
    TrustDomainTooLong {
        /// What was refused.
        input: Input,
        /// The trust domain's length.
        len: usize,
    },
    /// Uppercase letters in the trust domain.
    #[error("invalid {input}: trust domain must be lowercase")]
    TrustDomainUppercase {
        /// What was refused.
        input: Input,
    },
    /// Any other character outside `[a-z0-9.-_]` in the trust domain.
    #[error(
        "invalid {input}: trust domain has the character {found:?}; only a-z, 0-9, '.', '-' and '_' are allowed"
    )]
    TrustDomainChar {
        /// What was refused.
        input: Input,
        /// The first offending character.
        found: char,
    },
    /// A trust domain written as a URI: it is the bare name, `example.org`.
    #[error("invalid {input}: give the bare name, without \"spiffe://\"")]
    TrustDomainIsUri {
        /// What was refused.
        input: Input,
    },
    /// A `:port` after the trust domain.
    #[error("invalid {input}: a port is not allowed")]
    Port {
        /// What was refused.
        input: Input,
    },
    /// A `user@` before the trust domain.
    #[error("invalid {input}: userinfo (user@) is not allowed")]
    Userinfo {
        /// What was refused.
        input: Input,
    },
    /// A `?query`.
    #[error("invalid {input}: a query is not allowed")]
    Query {
        /// What was refused.
        input: Input,
    },
    /// A `#fragment`.
    #[error("invalid {input}: a fragment is not allowed")]
    Fragment {
        /// What was refused.
        input: Input,
    },
    /// A `%xx` escape: SPIFFE IDs are compared as plain strings, so escapes are not allowed.
    #[error("invalid {input}: percent-encoding is not allowed")]
    PercentEncoding {
        /// What was refused.
        input: Input,
    },
    /// `//` inside the path.
    #[error("invalid {input}: path segments must not be empty")]
    EmptySegment {
        /// What was refused.
        input: Input,
    },
    /// A path ending in `/`.
    #[error("invalid {input}: path must not end with '/'")]
    TrailingSlash {
        /// What was refused.
        input: Input,
    },
    /// A `.` or `..` segment.
    #[error("invalid {input}: path segments must not be '.' or '..'")]
    DotSegment {
        /// What was refused.
        input: Input,
    },
    /// A character outside `[a-zA-Z0-9.-_]` in the path.
    #[error(
        "invalid {input}: path has the character {found:?}; only letters, digits, '.', '-' and '_' are allowed"
    )]
    PathChar {
        /// What was refused.
        input: Input,
        /// The first offending character.
        found: char,
    },
    /// [`SpiffeId::from_service_account`] was given a namespace that is not a DNS-1123 label.
    #[error("invalid {input}: namespace {namespace:?} is not a DNS label: {reason}")]
    Namespace {
        /// The ID that would have been built.
        input: Input,
        /// The namespace given.
        namespace: String,
        /// Why it is not a DNS label.
        reason: &'static str,
    },
    /// [`SpiffeId::from_service_account`] was given a service account that is not a DNS-1123
    /// label.
    #[error("invalid {input}: service account {service_account:?} is not a DNS label: {reason}")]
    ServiceAccount {
        /// The ID that would have been built.
        input: Input,
        /// The service account given.
        service_account: String,
        /// Why it is not a DNS label.
        reason: &'static str,
    },
}

impl SpiffeIdError {
    /// What was refused.
    pub fn input(&self) -> &Input {
        match self {
            Self::Empty { input }
            | Self::TooLong { input, .. }
            | Self::Scheme { input }
            | Self::EmptyTrustDomain { input }
            | Self::TrustDomainTooLong { input, .. }
            | Self::TrustDomainUppercase { input }
            | Self::TrustDomainChar { input, .. }
            | Self::TrustDomainIsUri { input }
            | Self::Port { input }
            | Self::Userinfo { input }
            | Self::Query { input }
            | Self::Fragment { input }
            | Self::PercentEncoding { input }
            | Self::EmptySegment { input }
            | Self::TrailingSlash { input }
            | Self::DotSegment { input }
            | Self::PathChar { input, .. }
            | Self::Namespace { input, .. }
            | Self::ServiceAccount { input, .. } => input,
        }
    }
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

// === impl TrustDomain ===

impl TrustDomain {
    /// Validates `name` as a trust domain (the bare name, without `spiffe://`).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        let input = || Input::TrustDomain(name.to_owned());
        if name.starts_with(SCHEME) {
            return Err(SpiffeIdError::TrustDomainIsUri { input: input() });
        }
        check_trust_domain(name, input)?;
        Ok(Self(name.to_owned()))
    }

    /// The trust domain's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a trust domain name; `input` builds the error's input only when there is an error.
fn check_trust_domain(td: &str, input: impl Fn() -> Input) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain { input: input() });
    }
    // Userinfo and ports are URI syntax that a trust domain cannot have; naming them is clearer
    // than "invalid character '@'".
    if td.contains('@') {
        return Err(SpiffeIdError::Userinfo { input: input() });
    }
    if td.contains(':') {
        return Err(SpiffeIdError::Port { input: input() });
    }
    if let Some(found) = td.chars().find(|c| !is_trust_domain_char(*c)) {
        return Err(if found.is_ascii_uppercase() {
            SpiffeIdError::TrustDomainUppercase { input: input() }
        } else {
            SpiffeIdError::TrustDomainChar {
                input: input(),
                found,
            }
        });
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong {
            input: input(),
            len: td.len(),
        });
    }
    Ok(())
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    trust_domain: TrustDomain,
    /// Where the path starts in `uri` (`uri.len()` when there is no path), so that accessors
    /// never parse again.
    path_start: usize,
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(uri: &str) -> Result<Self, SpiffeIdError> {
        let input = || Input::SpiffeId(uri.to_owned());
        if uri.is_empty() {
            return Err(SpiffeIdError::Empty { input: input() });
        }
        if uri.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                input: Input::SpiffeId(uri.chars().take(64).chain("...".chars()).collect()),
                len: uri.len(),
            });
        }
        let Some(rest) = uri.strip_prefix(SCHEME) else {
            return Err(SpiffeIdError::Scheme { input: input() });
        };
        // These may appear anywhere after the scheme; look for them before splitting so that
        // the message names the URI feature rather than a stray character.
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment { input: input() });
        }
        if rest.contains('?') {
            return Err(SpiffeIdError::Query { input: input() });
        }
        if rest.contains('%') {
            return Err(SpiffeIdError::PercentEncoding { input: input() });
        }
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(td, input)?;
        if let Some(path) = path.strip_prefix('/') {
            let mut segments = path.split('/').peekable();
            while let Some(segment) = segments.next() {
                if segment.is_empty() {
                    return Err(if segments.peek().is_none() {
                        SpiffeIdError::TrailingSlash { input: input() }
                    } else {
                        SpiffeIdError::EmptySegment { input: input() }
                    });
                }
                if segment == "." || segment == ".." {
                    return Err(SpiffeIdError::DotSegment { input: input() });
                }
                if let Some(found) = segment.chars().find(|c| !is_path_char(*c)) {
                    return Err(SpiffeIdError::PathChar {
                        input: input(),
                        found,
                    });
                }
            }
        }
        Ok(Self {
            uri: uri.to_owned(),
            trust_domain: TrustDomain(td.to_owned()),
            path_start: SCHEME.len() + td.len(),
        })
    }

    /// `spiffe://<td>/ns/<namespace>/sa/<service_account>`; both parts must be DNS-1123 labels,
    /// as Kubernetes namespaces and service accounts are.
    pub fn from_service_account(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        let uri = format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        if let Err(reason) = check_dns_label(namespace) {
            return Err(SpiffeIdError::Namespace {
                input: Input::SpiffeId(uri),
                namespace: namespace.to_owned(),
                reason,
            });
        }
        if let Err(reason) = check_dns_label(service_account) {
            return Err(SpiffeIdError::ServiceAccount {
                input: Input::SpiffeId(uri),
                service_account: service_account.to_owned(),
                reason,
            });
        }
        // The parts are valid, so this parse cannot fail; going through it keeps one definition
        // of validity (and of `path_start`).
        Self::parse(&uri)
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, with its leading `/`; empty for the ID of the trust domain itself.
    pub fn path(&self) -> &str {
        &self.uri[self.path_start..]
    }

    /// The namespace of an `/ns/<ns>/sa/<sa>` ID; `None` for any other shape.
    pub fn namespace(&self) -> Option<&str> {
        self.ns_sa().map(|(ns, _)| ns)
    }

    /// The service account of an `/ns/<ns>/sa/<sa>` ID; `None` for any other shape.
    pub fn service_account(&self) -> Option<&str> {
        self.ns_sa().map(|(_, sa)| sa)
    }

    fn ns_sa(&self) -> Option<(&str, &str)> {
        let rest = self.path().strip_prefix("/ns/")?;
        let (ns, rest) = rest.split_once('/')?;
        let sa = rest.strip_prefix("sa/")?;
        // Parsing already refused empty segments, so only the segment count is left to check.
        if sa.contains('/') {
            return None;
        }
        Some((ns, sa))
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

// Both serialize as their string form and validate when deserialized, so a config or state file
// can never carry an invalid ID.

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
