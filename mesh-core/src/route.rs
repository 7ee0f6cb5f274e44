//! Route matching and weighted backend picking: pure functions over a request summary.
//!
//! A destination's routes are compiled once per snapshot into [`CompiledRoutes`]: rules are
//! flattened into a list of match candidates sorted by Gateway API precedence, regular
//! expressions are already compiled, and each rule has a cumulative weight table. Routing a
//! request walks that list and returns the first candidate that matches; it allocates nothing
//! (except to join a repeated header for a regular expression, or to decode an escaped query
//! value for one).
//!
//! # Precedence
//!
//! HTTPRoute matches rank, continuing on ties, by: an `Exact` path; then a
//! `RegularExpression` path (longer pattern first; Gateway API leaves regular expressions to the
//! implementation, and this puts them between exact and prefix matches, as Envoy Gateway does,
//! so a pattern is not shadowed by the catch-all `/` prefix); then the longest `PathPrefix` (in
//! characters, a trailing `/` ignored); then a method match; then the most header matches; then
//! the most query parameter matches.
//!
//! GRPCRoute matches rank by the most characters in a matching service, then in a matching
//! method (an `Exact` value's or a pattern's characters alike), then the most header matches.
//!
//! Remaining ties go to the oldest route (routes with a creation time before those without),
//! then to the route name in alphabetical order (every route here is in the destination's
//! namespace, so `namespace/name` order is name order), then to rule order within the route,
//! then to match order within the rule.
//!
//! # Which routes a request sees
//!
//! A gRPC request (`content-type: application/grpc...`) is matched against the GRPCRoutes when
//! any are attached, otherwise against the HTTPRoutes; any other request only against the
//! HTTPRoutes. The two kinds are never merged, as Gateway API requires.
//!
//! # Outcomes
//!
//! - [`RouteOutcome::NoRoutes`]: nothing is attached; use the service's own endpoints.
//! - [`RouteOutcome::NotFound`]: routes are attached and none matches: HTTP 404, gRPC
//!   `UNIMPLEMENTED`.
//! - [`RouteOutcome::Matched`]: the rule to apply; [`pick_backend`] then chooses a backend by
//!   weight. A rule whose weights are all 0 (or that has no backends) picks nothing: HTTP 500,
//!   gRPC `UNAVAILABLE`. A backend whose service does not exist keeps its share of traffic, and
//!   that share fails the same way.

mod compile;
mod explain;
mod matching;
mod pick;
mod summary;

pub use compile::{BackendTarget, CompiledRoutes, CompiledRule, Matched, RouteOutcome};
pub use explain::{Attempt, Criterion, Explanation, RankedMatch};
pub use pick::{BackendPick, mirror_sampled, pick_backend};
pub use summary::{GrpcPath, RequestSummary, is_grpc, is_grpc_content_type};

#[cfg(test)]
mod tests;
