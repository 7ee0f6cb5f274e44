//! Zone-aware balancing arithmetic: which endpoints are local to a caller, and what share of
//! its calls stays local.
//!
//! The rule is Envoy's locality weighting with its overprovisioning factor, as Istio applies
//! it: a caller keeps all its calls in its own zone while at least 1/1.4 (about 71 %) of the
//! local endpoints are healthy, and beyond that sends the local zone only
//! `1.4 × healthy ÷ total` of its calls, spilling the rest to the other zones, so traffic
//! comes back on its own as local endpoints recover. An endpoint counts as unhealthy while it
//! is ejected, not connected, or asking to be spared (it answered 429 or
//! RESOURCE_EXHAUSTED): "can carry the load" is what the endpoints say themselves.
//!
//! Which endpoints are local: when any endpoint of the set carries topology hints
//! (EndpointSlice `hints.forZones`), those hinted for the caller's zone; otherwise those
//! whose `zone` is the caller's. A caller with no zone, or a set with no local endpoint or
//! only local ones, is balanced as one set.

/// How far the healthy share of the local zone is scaled up before traffic spills: Envoy's
/// default overprovisioning factor.
pub const OVERPROVISIONING: f64 = 1.4;

/// Whether an endpoint in `zone`, hinted for `for_zones`, is local to a caller in `own`.
/// `hinted` says whether the endpoint's set uses hints at all (any endpoint has some).
pub fn is_local(own: &str, zone: &str, for_zones: &[String], hinted: bool) -> bool {
    if own.is_empty() {
        return false;
    }
    if hinted {
        for_zones.iter().any(|z| z == own)
    } else {
        zone == own
    }
}

/// The share of calls (0 to 1) that stays in the local zone when `healthy` of its `total`
/// endpoints are healthy.
pub fn local_share(healthy: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (OVERPROVISIONING * healthy as f64 / total as f64).min(1.0)
}

/// Whether a call stays local, given the local share and a uniform random number in `[0, 1)`.
pub fn stays_local(share: f64, random: f64) -> bool {
    share >= 1.0 || random < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_by_zone_or_by_hints() {
        let hints = ["zone-b".to_owned()];
        let cases = [
            // own, zone, hints, hinted set, local?
            ("zone-a", "zone-a", &[][..], false, true),
            ("zone-a", "zone-b", &[][..], false, false),
            ("", "", &[][..], false, false),
            ("", "zone-a", &[][..], false, false),
            // In a hinted set the hints decide, not where the endpoint sits.
            ("zone-b", "zone-a", &hints[..], true, true),
            ("zone-a", "zone-a", &hints[..], true, false),
            ("zone-a", "zone-a", &[][..], true, false),
        ];
        for (own, zone, for_zones, hinted, local) in cases {
            assert_eq!(
                is_local(own, zone, for_zones, hinted),
                local,
                "{own:?} {zone:?} {for_zones:?} {hinted}"
            );
        }
    }

    #[test]
    fn traffic_stays_local_until_under_the_overprovisioned_share() {
        let cases = [
            // healthy, total, share
            (3, 3, 1.0),
            (3, 4, 1.0),  // 75 % × 1.4 > 1
            (5, 7, 1.0),  // 71.4 % × 1.4 = 1.0
            (1, 2, 0.7),  // 50 % × 1.4
            (1, 4, 0.35), // 25 % × 1.4
            (0, 3, 0.0),
            (0, 0, 0.0),
        ];
        for (healthy, total, share) in cases {
            let got = local_share(healthy, total);
            assert!((got - share).abs() < 1e-9, "{healthy}/{total}: {got}");
        }
        assert!(stays_local(1.0, 0.999_999));
        assert!(stays_local(0.7, 0.69));
        assert!(!stays_local(0.7, 0.7));
        assert!(!stays_local(0.0, 0.0));
    }
}
