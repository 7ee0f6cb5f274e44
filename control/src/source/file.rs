//! The control file (YAML): its format, its validation with field paths, and the poller that
//! applies edits while the service runs.
//!
//! ```yaml
//! services:
//!   - name: greeter
//!     namespace: default
//!     endpoints:
//!       - address: 127.0.0.1:50051
//!         identity: spiffe://mesh.local/ns/default/sa/greeter
//!     defaultPolicy: deny
//!     exemptPaths: [/grpc.health.v1.Health/Check]
//! bootstrapTokens:
//!   - token: 0f3c9a61d2e84b7e
//!     namespace: default
//!     serviceAccount: greeter
//! defaultPolicy: all-authenticated
//! policies:
//!   - name: shop-may-greet
//!     target: {service: greeter}
//!     action: ALLOW
//!     rules:
//!       - from: {identities: ["spiffe://mesh.local/ns/shop/*"]}
//!         to: {grpc: [{service: helloworld.Greeter}]}
//! ```
//!
//! `services` has exactly the shape of [`mesh_core::config::ServiceSpec`], and `policies`,
//! `requestAuthentications` and `defaultPolicy` those of [`MeshConfig`] (see [`mesh_core::authz`] for how policies are
//! evaluated); `bootstrapTokens` maps a secret token to the workload identity `Certify` signs
//! for. Unknown fields are errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::config::{
    MeshConfig, PolicySpec, RateLimitSpec, RequestAuthenticationSpec, ServiceSpec, ValidConfig,
};
use mesh_core::snapshot::check_dns_label;
use mesh_core::{FieldError, SpiffeId, TrustDomain, ValidationErrors};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::admin::metrics;

/// How often the file source reads the file to look for edits.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The largest control file accepted: 16 MiB, checked before the file is parsed (and before
/// it is read whole). A mesh of thousands of services fits in a few megabytes.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The largest a control file may be once its YAML aliases are expanded, in bytes of scalars
/// plus one per node: twice [`MAX_FILE_BYTES`]. Aliases exist to save typing, not to multiply
/// a document: a small file whose aliases expand to gigabytes is refused before anything is
/// built from it.
pub const MAX_EXPANDED_BYTES: usize = 2 * MAX_FILE_BYTES;

/// The control file as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlFile {
    /// Every service the mesh knows (the shape of [`MeshConfig::services`]).
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Tokens that workloads outside Kubernetes present to `Certify`.
    #[serde(default)]
    pub bootstrap_tokens: Vec<BootstrapTokenSpec>,
    /// Authorization policies (the shape of [`MeshConfig::policies`]).
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
    /// Local rate-limit policies (the shape of [`MeshConfig::rate_limits`]).
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSpec>,
    /// The mesh-wide default policy (see [`MeshConfig::default_policy`]).
    #[serde(default)]
    pub default_policy: Option<String>,
    /// End-user authentication: the JWT issuers services accept (the shape of
    /// [`MeshConfig::request_authentications`]).
    #[serde(default)]
    pub request_authentications: Vec<RequestAuthenticationSpec>,
    /// The zone of workload instances that do not set `MESH_ZONE`, by
    /// `<namespace>/<instance>` (see [`MeshConfig::instance_zones`]).
    #[serde(default)]
    pub instance_zones: std::collections::BTreeMap<String, String>,
}

/// One bootstrap token as written: whoever presents `token` is certified as
/// `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenSpec {
    /// The secret.
    pub token: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account.
    pub service_account: String,
}

impl fmt::Debug for BootstrapTokenSpec {
    // The token is a secret: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapTokenSpec")
            .field("token", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("service_account", &self.service_account)
            .finish()
    }
}

/// A validated control file: the mesh config and the bootstrap tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlConfig {
    /// The services, validated and indexed.
    pub mesh: ValidConfig,
    /// The bootstrap tokens with the identity each one proves.
    pub tokens: Vec<BootstrapToken>,
}

/// A validated bootstrap token.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The secret.
    pub token: String,
    /// The identity it proves.
    pub identity: SpiffeId,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("token", &"<redacted>")
            .field("identity", &self.identity)
            .finish()
    }
}

/// Why a control file's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not YAML, or not the control file's shape (unknown field, wrong type). serde_yaml's
    /// message names the field path and the line and column.
    #[error("{message}")]
    Syntax {
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong, with where.
        message: String,
    },
    /// Well-formed but invalid; every error with its field path.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// Larger than [`MAX_FILE_BYTES`], or than [`MAX_EXPANDED_BYTES`] once its aliases are
    /// expanded.
    #[error("{what} is larger than {max} bytes")]
    TooLarge {
        /// What was too large: the file, or the document with its aliases expanded.
        what: &'static str,
        /// The limit, in bytes.
        max: usize,
    },
}

/// Why the control file could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("control file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but refused.
    #[error("control file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: ParseError,
    },
}

// === impl ControlFile ===

impl ControlFile {
    /// Parses YAML text; syntax and shape errors carry line and column. Text over
    /// [`MAX_FILE_BYTES`], or whose aliases expand it past [`MAX_EXPANDED_BYTES`], is refused
    /// before anything is built from it.
    pub fn from_yaml(text: &str) -> Result<Self, ParseError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(ParseError::TooLarge {
                what: "the control file",
                max: MAX_FILE_BYTES,
            });
        }
        // An empty document is most likely a file caught mid-write: never read it as "no
        // services", which would withdraw every endpoint from every client.
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Err(ParseError::Syntax {
                line: None,
                column: None,
                message: "the file is empty".to_owned(),
            });
        }
        // Without an anchor (`&name`) nothing can be replayed, and the text's own bound bounds
        // what it builds: the walk (a second parse, a third of the time of a large file's) is
        // for text that has one, or a `&` in a string, which is walked to be safe.
        if text.contains('&') {
            expanded::check(text, MAX_EXPANDED_BYTES)?;
        }
        serde_yaml::from_str(text).map_err(syntax)
    }

    /// Validates every field against `trust_domain`, reporting every error with its path.
    pub fn validate(self, trust_domain: &TrustDomain) -> Result<ControlConfig, ValidationErrors> {
        let mut errors = Vec::new();
        let mesh = MeshConfig {
            services: self.services,
            policies: self.policies,
            request_authentications: self.request_authentications,
            rate_limits: self.rate_limits,
            default_policy: self.default_policy,
            instance_zones: self.instance_zones,
        };
        let mesh = match mesh.validate(trust_domain) {
            Ok(valid) => Some(valid),
            Err(e) => {
                errors.extend(e.0);
                None
            }
        };
        let tokens = validate_tokens(&self.bootstrap_tokens, trust_domain, &mut errors);
        match mesh {
            Some(mesh) if errors.is_empty() => Ok(ControlConfig { mesh, tokens }),
            _ => Err(ValidationErrors(errors)),
        }
    }
}

/// A serde_yaml error as a [`ParseError::Syntax`].
fn syntax(e: serde_yaml::Error) -> ParseError {
    let location = e.location();
    ParseError::Syntax {
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message: e.to_string(),
    }
}

/// How large a YAML document is with its aliases expanded, measured without expanding it.
///
/// serde_yaml 0.9 bounds nesting (128 levels) and the number of alias replays (100 times the
/// document's events), but not what the replays add up to: 2,000 aliases of one long scalar
/// are within its limits and build gigabytes. So the document is first walked with a visitor
/// that keeps nothing and counts what it is shown (aliases replayed as serde_yaml replays
/// them): bytes of scalars plus one per node, stopping at the first byte over the budget. The
/// walk costs time in proportion to the budget at most, and no memory.
mod expanded {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::{ParseError, syntax};

    /// Why the walk stopped early.
    const OVER: &str = "over the expansion budget";

    /// Refuses `text` when its expanded size exceeds `max`.
    pub(super) fn check(text: &str, max: usize) -> Result<(), ParseError> {
        let mut left = max;
        let walk = Walk { left: &mut left };
        match walk.deserialize(serde_yaml::Deserializer::from_str(text)) {
            Ok(()) => Ok(()),
            // Spent: the walk stopped at the budget (serde_yaml's message wraps ours).
            Err(_) if left == 0 => Err(ParseError::TooLarge {
                what: "the control file with its YAML aliases expanded",
                max,
            }),
            // The real parse reports the same error with its context.
            Err(e) => Err(syntax(e)),
        }
    }

    /// One node's walk, charging what it sees to `left`.
    struct Walk<'a> {
        left: &'a mut usize,
    }

    impl Walk<'_> {
        fn charge<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
            match self.left.checked_sub(bytes.saturating_add(1)) {
                Some(left) => {
                    *self.left = left;
                    Ok(())
                }
                None => {
                    *self.left = 0;
                    Err(E::custom(OVER))
                }
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any YAML")
        }

        fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<(), E> {
            self.charge(8)
        }
        fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<(), E> {
            self.charge(8)
        }
        fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<(), E> {
            self.charge(8)
        }
        fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
            self.charge(v.len())
        }
        fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_none<E: de::Error>(mut self) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            self.charge(0)?;
            while seq
                .next_element_seed(Walk {
                    left: &mut *self.left,
                })?
                .is_some()
            {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            self.charge(0)?;
            while map
                .next_key_seed(Walk {
                    left: &mut *self.left,
                })?
                .is_some()
            {
                map.next_value_seed(Walk {
                    left: &mut *self.left,
                })?;
            }
            Ok(())
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
            // A YAML tag (`!name value`): charge the variant and its content.
            use de::VariantAccess;
            let left = self.left;
            let ((), variant) = data.variant_seed(Walk { left: &mut *left })?;
            variant.newtype_variant_seed(Walk { left })
        }
    }
}

fn validate_tokens(
    specs: &[BootstrapTokenSpec],
    trust_domain: &TrustDomain,
    errors: &mut Vec<FieldError>,
) -> Vec<BootstrapToken> {
    let mut tokens = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let at = |field: &str| format!("bootstrapTokens[{i}].{field}");
        let before = errors.len();
        // Messages never quote the token: it is a secret, and errors end up in logs.
        if spec.token.is_empty() {
            errors.push(FieldError::new(at("token"), "must not be empty"));
        } else if spec
            .token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(FieldError::new(
                at("token"),
                "must not contain whitespace or control characters",
            ));
        } else if let Some(j) = specs[..i].iter().position(|s| s.token == spec.token) {
            errors.push(FieldError::new(
                at("token"),
                format!("duplicate of bootstrapTokens[{j}].token"),
            ));
        }
        if let Err(reason) = check_dns_label(&spec.namespace) {
            errors.push(FieldError::new(at("namespace"), reason));
        }
        // mesh-core's SPIFFE IDs take a DNS label as the service account.
        if let Err(reason) = check_dns_label(&spec.service_account) {
            errors.push(FieldError::new(at("serviceAccount"), reason));
        }
        if errors.len() != before {
            continue;
        }
        match SpiffeId::from_service_account(trust_domain, &spec.namespace, &spec.service_account) {
            Ok(identity) => tokens.push(BootstrapToken {
                token: spec.token.clone(),
                identity,
            }),
            Err(e) => errors.push(FieldError::new(at("serviceAccount"), e.to_string())),
        }
    }
    tokens
}

/// Parses and validates control file text.
pub fn parse(text: &str, trust_domain: &TrustDomain) -> Result<ControlConfig, ParseError> {
    Ok(ControlFile::from_yaml(text)?.validate(trust_domain)?)
}

/// Reads and validates the file at `path`; the error names the path.
pub async fn load(
    path: &Path,
    trust_domain: &TrustDomain,
) -> Result<(ControlConfig, Vec<u8>), LoadError> {
    let bytes = read_bounded(path).await.map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = parse_bytes(&bytes, trust_domain).map_err(|source| LoadError::Parse {
        path: path.to_owned(),
        source,
    })?;
    Ok((config, bytes))
}

/// Reads at most one byte more than [`MAX_FILE_BYTES`] of `path`: enough to tell a file that
/// is too large (which parsing then refuses) without reading all of it.
async fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let mut bytes = Vec::new();
    // `MAX_FILE_BYTES + 1` fits a u64 on every target.
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    Ok(bytes)
}

/// [`load`]'s read without a runtime (for the `meshctl` command): at most one byte more than
/// [`MAX_FILE_BYTES`] of `path`. Pass the bytes to [`text_of`], then [`parse`].
pub fn read_bounded_blocking(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of a control file read as bytes, refused as the service refuses it: larger than
/// [`MAX_FILE_BYTES`], or not UTF-8.
pub fn text_of(bytes: &[u8]) -> Result<&str, ParseError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ParseError::TooLarge {
            what: "the control file",
            max: MAX_FILE_BYTES,
        });
    }
    std::str::from_utf8(bytes).map_err(|e| ParseError::Syntax {
        line: None,
        column: None,
        message: format!("not UTF-8: {e}"),
    })
}

fn parse_bytes(bytes: &[u8], trust_domain: &TrustDomain) -> Result<ControlConfig, ParseError> {
    parse(text_of(bytes)?, trust_domain)
}

/// Polls `path` every `interval` (by default [`POLL_INTERVAL`]) and calls `apply` with each
/// new valid config.
///
/// `initial` is the content already applied. A change is applied once two consecutive reads
/// agree, so a file caught half-written is never applied. An invalid edit is logged (with its
/// field paths) once and the last good config keeps serving; so does a file that disappears.
pub fn spawn_poller<F>(
    path: PathBuf,
    interval: Duration,
    trust_domain: TrustDomain,
    initial: Vec<u8>,
    apply: F,
) -> JoinHandle<()>
where
    F: Fn(ControlConfig) + Send + 'static,
{
    tokio::spawn(async move {
        // What was last acted upon (applied or refused), and what the previous poll read.
        let mut settled = initial;
        let mut previous: Option<Vec<u8>> = None;
        let mut read_failed = false;
        let mut interval = tokio::time::interval(interval.max(Duration::from_millis(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let bytes = match read_bounded(&path).await {
                Ok(bytes) => {
                    if read_failed {
                        tracing::info!(path = %path.display(), "control file readable again");
                        read_failed = false;
                    }
                    bytes
                }
                Err(error) => {
                    if !read_failed {
                        metrics::reload_error("unreadable");
                        tracing::warn!(
                            path = %path.display(),
                            %error,
                            "cannot read the control file; the last good config keeps serving"
                        );
                        read_failed = true;
                    }
                    previous = None;
                    continue;
                }
            };
            if bytes == settled {
                previous = None;
                continue;
            }
            if previous.as_ref() != Some(&bytes) {
                // Changed since the last read: wait for it to stay put for one interval.
                previous = Some(bytes);
                continue;
            }
            previous = None;
            match parse_bytes(&bytes, &trust_domain) {
                Ok(config) => {
                    tracing::info!(path = %path.display(), "control file changed");
                    apply(config);
                }
                Err(error) => {
                    metrics::reload_error("invalid");
                    tracing::warn!(
                        path = %path.display(),
                        %error,
                        "refused an edit of the control file; the last good config keeps serving"
                    );
                }
            }
            settled = bytes;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::testing::trust_domain as td;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, &td()) {
            Err(ParseError::Invalid(e)) => e.0.iter().map(ToString::to_string).collect(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    fn syntax(text: &str) -> (Option<usize>, Option<usize>, String) {
        match parse(text, &td()) {
            Err(ParseError::Syntax {
                line,
                column,
                message,
            }) => (line, column, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    const GOOD: &str = "\
services:
  - name: greeter
    namespace: default
    endpoints:
      - address: 127.0.0.1:50051
        identity: spiffe://mesh.local/ns/default/sa/greeter
bootstrapTokens:
  - token: greeter-secret-1
    namespace: default
    serviceAccount: greeter
  - token: client-secret-2
    namespace: apps
    serviceAccount: web-frontend
";

    /// A control file whose one endpoint label value, `len` bytes long, is repeated through
    /// `aliases` aliases.
    fn alias_bomb(len: usize, aliases: usize) -> String {
        let mut text = "services:\n  - name: greeter\n    endpoints:\n".to_owned();
        for i in 0..=aliases {
            let value = if i == 0 {
                format!("&v \"{}\"", "a".repeat(len))
            } else {
                "*v".to_owned()
            };
            text.push_str(&format!(
                "      - {{address: \"10.0.{}.{}:80\", identity: spiffe://mesh.local/ns/default/sa/g, labels: {{app: {value}}}}}\n",
                i / 250,
                i % 250 + 1
            ));
        }
        text
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // 50 KB repeated 2,000 times: 100 MB expanded from a file of under 300 KB.
        let text = alias_bomb(50_000, 2_000);
        assert!(text.len() < 300_000, "{} bytes", text.len());
        match ControlFile::from_yaml(&text) {
            Err(ParseError::TooLarge { what, max }) => {
                assert_eq!(max, MAX_EXPANDED_BYTES);
                assert!(what.contains("aliases"), "{what}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Anchors and aliases used as meant are fine (and a long value is then caught by
        // validation, with its field path).
        let text = alias_bomb(100, 3);
        let errors = errors(&text);
        assert!(
            errors[0].starts_with("services[0].endpoints[0].labels.app: "),
            "{errors:?}"
        );
    }

    #[test]
    fn text_without_an_anchor_is_not_walked_and_still_checked() {
        // No `&` at all: an alias has nothing to replay, and serde_yaml refuses it itself.
        let text = "services:\n  - name: greeter\n    endpoints: *missing\n";
        assert!(!text.contains('&'));
        match ControlFile::from_yaml(text) {
            Err(ParseError::Syntax { message, .. }) => {
                assert!(message.contains("unknown anchor"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        // A `&` inside a string is walked (it could be an anchor) and parses as before.
        let text = GOOD.replace("client-secret-2", "\"client&secret\"");
        assert!(text.contains('&'));
        let config = parse(&text, &td()).expect("valid");
        assert_eq!(config.tokens.len(), 2);
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let text = format!("# {}\n{GOOD}", "x".repeat(MAX_FILE_BYTES));
        assert_eq!(
            parse(&text, &td()),
            Err(ParseError::TooLarge {
                what: "the control file",
                max: MAX_FILE_BYTES
            })
        );
        let err = parse_bytes(text.as_bytes(), &td()).expect_err("too large");
        assert_eq!(
            err.to_string(),
            format!("the control file is larger than {MAX_FILE_BYTES} bytes")
        );
    }

    #[test]
    fn parses_a_good_file() {
        let config = parse(GOOD, &td()).expect("valid");
        assert_eq!(config.tokens.len(), 2);
        assert_eq!(
            config.tokens[0].identity.as_str(),
            "spiffe://mesh.local/ns/default/sa/greeter"
        );
        assert_eq!(
            config.tokens[1].identity.as_str(),
            "spiffe://mesh.local/ns/apps/sa/web-frontend"
        );
        let names: Vec<String> = config.mesh.services().map(ToString::to_string).collect();
        assert_eq!(names, ["greeter.default"]);
    }

    #[test]
    fn token_errors_carry_field_paths() {
        let text = "\
bootstrapTokens:
  - token: aaaa-secret
    namespace: default
    serviceAccount: Greeter
  - token: ''
    namespace: -bad
    serviceAccount: ok
  - token: aaaa-secret
    namespace: default
    serviceAccount: other
  - token: has space
    namespace: default
    serviceAccount: x..y
";
        assert_eq!(
            errors(text),
            [
                "bootstrapTokens[0].serviceAccount: only lowercase letters, digits and '-' are allowed",
                "bootstrapTokens[1].token: must not be empty",
                "bootstrapTokens[1].namespace: must start and end with a letter or digit",
                "bootstrapTokens[2].token: duplicate of bootstrapTokens[0].token",
                "bootstrapTokens[3].token: must not contain whitespace or control characters",
                "bootstrapTokens[3].serviceAccount: only lowercase letters, digits and '-' are allowed",
            ]
        );
    }

    #[test]
    fn token_errors_never_echo_the_token() {
        let text = "\
bootstrapTokens:
  - token: very-secret-value
    namespace: default
    serviceAccount: a
  - token: very-secret-value
    namespace: default
    serviceAccount: b
";
        for e in errors(text) {
            assert!(!e.contains("very-secret-value"), "{e}");
        }
        let config = parse(
            &text[..text.rfind("  - token").expect("two entries")],
            &td(),
        )
        .expect("one valid token");
        assert!(!format!("{config:?}").contains("very-secret-value"));
    }

    #[test]
    fn service_errors_come_from_mesh_core_with_paths() {
        let text = "\
services:
  - name: greeter
    endpoints:
      - address: not-an-address
        identity: spiffe://mesh.local/ns/default/sa/greeter
bootstrapTokens:
  - token: t0k3n-secret
    namespace: default
    serviceAccount: Bad
";
        let errors = errors(text);
        assert!(
            errors[0].starts_with("services[0].endpoints[0].address: "),
            "{errors:?}"
        );
        assert_eq!(
            errors.last().map(String::as_str),
            Some(
                "bootstrapTokens[0].serviceAccount: only lowercase letters, digits and '-' are allowed"
            )
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_line_and_column() {
        let (line, column, message) = syntax(
            "\
bootstrapTokens:
  - token: abc
    namespace: default
    serviceAcount: greeter
",
        );
        assert_eq!(line, Some(4));
        assert_eq!(column, Some(5));
        assert!(message.contains("bootstrapTokens[0]"), "{message}");
        assert!(
            message.contains("unknown field `serviceAcount`"),
            "{message}"
        );
        assert!(message.contains("line 4 column 5"), "{message}");

        let (line, _, message) = syntax("services:\n  - name: a\n    endpionts: []\n");
        assert_eq!(line, Some(3));
        assert!(message.contains("services[0]"), "{message}");

        let (line, _, message) = syntax("servics: []\n");
        assert_eq!(line, Some(1));
        assert!(message.contains("unknown field `servics`"), "{message}");
    }

    #[test]
    fn missing_fields_and_bad_yaml_are_syntax_errors() {
        let (_, _, message) = syntax("bootstrapTokens:\n  - token: abc\n    namespace: default\n");
        assert!(
            message.contains("missing field `serviceAccount`"),
            "{message}"
        );

        let (line, _, _) = syntax("services: [\n  {name: a,\n");
        assert!(line.is_some());

        let (line, _, message) = syntax("services: 3\n");
        assert_eq!(line, Some(1));
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn an_empty_file_is_refused() {
        let (_, _, message) = syntax("");
        assert_eq!(message, "the file is empty");
        let (_, _, message) = syntax("# only a comment\n\n");
        assert_eq!(message, "the file is empty");
        // An explicitly empty config is fine.
        let config = parse("services: []\n", &td()).expect("valid");
        assert!(config.tokens.is_empty());
    }

    #[test]
    fn policies_are_read_and_validated_with_paths() {
        // The example of the module docs.
        let text = "\
services:
  - name: greeter
    namespace: default
    endpoints:
      - address: 127.0.0.1:50051
        identity: spiffe://mesh.local/ns/default/sa/greeter
    defaultPolicy: deny
    exemptPaths: [/grpc.health.v1.Health/Check]
bootstrapTokens:
  - token: 0f3c9a61d2e84b7e
    namespace: default
    serviceAccount: greeter
defaultPolicy: all-authenticated
policies:
  - name: shop-may-greet
    target: {service: greeter}
    action: ALLOW
    rules:
      - from: {identities: [\"spiffe://mesh.local/ns/shop/*\"]}
        to: {grpc: [{service: helloworld.Greeter}]}
";
        let config = parse(text, &td()).expect("valid");
        let greeter = "greeter.default".parse().expect("valid name");
        let inbound = config.mesh.inbound(&greeter);
        assert_eq!(inbound.policies.len(), 1);
        assert_eq!(inbound.default_policy.as_str(), "deny");
        assert_eq!(config.mesh.default_policy().as_str(), "all-authenticated");

        let bad = text
            .replace("defaultPolicy: deny", "defaultPolicy: closed")
            .replace("{service: greeter}", "{service: greeter, route: api}");
        assert_eq!(
            errors(&bad),
            [
                r#"services[0].defaultPolicy: unknown default policy "closed": expected all-unauthenticated, all-authenticated, deny or audit"#,
                r#"policies[0].target.route: service "greeter.default" has no route "api""#,
            ]
        );
        let (line, _, message) =
            syntax(&text.replace("action: ALLOW", "action: ALLOW\n    actoin: DENY"));
        assert_eq!(line, Some(18));
        assert!(message.contains("unknown field `actoin`"), "{message}");
    }

    #[test]
    fn non_utf8_is_a_syntax_error() {
        let err = parse_bytes(&[0xff, 0xfe, b'a'], &td()).expect_err("refused");
        assert!(err.to_string().starts_with("not UTF-8"), "{err}");
    }
}
