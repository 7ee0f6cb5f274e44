//! Weighted backend picking over a rule's precomputed cumulative weight table.

use super::compile::CompiledRule;
use crate::snapshot::{BackendRef, RequestMirror};

/// Which backend a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendPick<'a> {
    /// A backend whose service exists.
    Resolved {
        /// Its position in the rule's backends.
        index: usize,
        /// The reference.
        backend: &'a BackendRef,
    },
    /// A backend whose service does not exist: this request fails (HTTP 500, gRPC
    /// `UNAVAILABLE`), as Gateway API requires for an invalid backend's share.
    Unresolved {
        /// Its position in the rule's backends.
        index: usize,
        /// The reference.
        backend: &'a BackendRef,
    },
    /// The rule has no backend with a weight above 0: every request fails (HTTP 500, gRPC
    /// `UNAVAILABLE`).
    NoBackend,
}

/// Picks a backend of `rule` by weight, from a uniformly random `random`.
///
/// Backend `i` is picked for a share `weight[i] / total` of the `u32` space (to within one value
/// per backend), so a weight of 0 is never picked. O(log n), no allocation.
pub fn pick_backend(rule: &CompiledRule, random: u32) -> BackendPick<'_> {
    let total = rule.total_weight();
    if total == 0 {
        return BackendPick::NoBackend;
    }
    // Scales `random` into `0..total` without the bias of a modulo.
    let point = (u64::from(random) * total) >> 32;
    let index = rule.cumulative.partition_point(|&sum| sum <= point);
    match rule.backends.get(index) {
        Some(target) if target.found => BackendPick::Resolved {
            index,
            backend: &target.backend_ref,
        },
        Some(target) => BackendPick::Unresolved {
            index,
            backend: &target.backend_ref,
        },
        // `point < total = cumulative[last]`, so some index qualifies; kept total for safety.
        None => BackendPick::NoBackend,
    }
}

/// Whether a request is mirrored under `mirror`'s percentage, from a uniformly random `random`.
pub fn mirror_sampled(mirror: &RequestMirror, random: u32) -> bool {
    (u64::from(random) * 100) >> 32 < u64::from(mirror.percent)
}

impl CompiledRule {
    /// [`pick_backend`] on this rule.
    pub fn pick_backend(&self, random: u32) -> BackendPick<'_> {
        pick_backend(self, random)
    }
}
