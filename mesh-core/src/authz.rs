//! Authorization: the inbound policy model of a service and its pure evaluation.
//!
//! A service's [`InboundPolicy`] holds its mTLS mode, its default policy, the paths that are
//! exempt from authorization, and the [`AuthorizationPolicy`]s that target it or one of its
//! routes. [`InboundPolicy::evaluate`] decides one [`AuthzRequest`] and returns a
//! [`Decision`] that a server layer puts in request extensions.
//!
//! # Evaluation
//!
//! 1. A path in `exempt_paths` is allowed, whatever any policy says (so default-deny never
//!    breaks liveness probes).
//! 2. Policies apply when they target the whole service, or the route the request matched.
//! 3. DENY first: the first DENY policy (config order) with a matching rule denies.
//! 4. Then ALLOW: when any ALLOW policy applies, the first one with a matching rule allows, and
//!    a request none of them matches is denied.
//! 5. Otherwise the service's default decides: `all-unauthenticated` allows everyone,
//!    `all-authenticated` everyone with an identity, `deny` no one, and `audit` everyone while
//!    recording each request as one that `deny` would refuse.
//!
//! Audit-mode policies (`mode: audit`) take no part in the decision. The same evaluation is run
//! with them enforced and the `audit` default read as `deny`; when that differs, it is recorded
//! in [`Decision::audit`], and an allowed request it would deny gets [`Verdict::AuditAllow`].
//! That is the rollout path: write the policy in audit mode (or set the default to `audit`),
//! watch for `audit` verdicts, then enforce.
//!
//! # Matching
//!
//! A rule matches when the caller matches `from` and the request matches `to` (every
//! request when `to` is omitted). `from` lists SPIFFE IDs (exact, with a trailing `*` for a
//! prefix, or `*` for any authenticated caller), namespaces and `namespace/serviceAccount`
//! pairs of `/ns/<ns>/sa/<sa>` IDs, and `unauthenticated` for callers without an identity;
//! any entry may match. `to` lists HTTP methods, paths (exact, or with a trailing `*` for a
//! prefix), gRPC services with an optional method, and the server's ports; each list given
//! must have a matching entry.
//!
//! A rule may also name the request's end user (`principal`, from a JWT verified by
//! [`crate::jwt`]): `requestPrincipals` (`<iss>/<sub>`, exact, with a trailing `*`, or `*` for
//! any) and claim conditions (`groups` holds `admin`), all ANDed with `from` and `to`. A
//! request without a token matches no rule that names a principal, so an ALLOW policy with
//! such rules is how a service requires a token.
//!
//! mTLS modes are carried here; accepting plaintext in permissive mode is the server's job. A
//! plaintext caller has no identity, so it passes only rules with `unauthenticated` and the
//! `all-unauthenticated` and `audit` defaults.

mod evaluate;
mod model;

pub use evaluate::{AuditOutcome, AuthzRequest, Decision, Reason, Verdict};
pub use model::{
    Action, AuthorizationPolicy, AuthorizationRule, ClaimCondition, DefaultPolicy, GrpcOperation,
    IdentityMatch, InboundPolicy, MtlsMode, Operation, PathPattern, PolicyMode, PrincipalCondition,
    RequestPrincipalMatch, ServiceAccountRef, Source,
};

#[cfg(test)]
mod tests;
