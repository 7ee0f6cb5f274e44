//! Balancing: power of two choices (P2C) over peak-EWMA cost, among the endpoints a call may
//! use now.
//!
//! Picking is a plain function over a slice of endpoints and a source of randomness, so that it
//! can be tested against fake endpoints with a seeded generator; [`super::backend`] calls it
//! with its endpoint set and `fastrand`. It reads what [`Balanced`] exposes (atomics on a real
//! endpoint) and allocates nothing.

use std::sync::Arc;
use std::time::Instant;

use super::endpoint::{Endpoint, EndpointKey};

/// What P2C needs to know of an endpoint.
pub(super) trait Balanced {
    /// What identifies it (a retry avoids the endpoint a failed try used).
    fn key(&self) -> &EndpointKey;
    /// Whether a call could be sent to it now (connected, not ejected).
    fn is_available(&self, now: Instant) -> bool;
    /// What P2C minimises (see [`super::load::PeakEwma::cost`]).
    fn cost(&self, now: Instant) -> f64;
}

impl<B> Balanced for Arc<Endpoint<B>> {
    fn key(&self) -> &EndpointKey {
        &self.key
    }

    fn is_available(&self, now: Instant) -> bool {
        Endpoint::is_available(self, now)
    }

    fn cost(&self, now: Instant) -> f64 {
        Endpoint::cost(self, now)
    }
}

/// P2C: two endpoints at random among the available ones, the cheaper wins; the endpoints in
/// `avoid` (a failed try's, or a hedged call's outstanding tries') are used only when no other
/// endpoint is available.
///
/// `random(n)` is a uniformly random index below `n` (`n` at least 1).
pub(super) fn p2c<'a, E: Balanced>(
    endpoints: &'a [E],
    avoid: &[EndpointKey],
    now: Instant,
    random: &mut impl FnMut(usize) -> usize,
) -> Option<&'a E> {
    let usable = |e: &E| e.is_available(now) && !avoid.contains(e.key());
    let chosen = match endpoints.len() {
        0 => None,
        1 => endpoints.first().filter(|e| usable(e)),
        n => {
            let a = random(n);
            let mut b = random(n - 1);
            if b >= a {
                b += 1;
            }
            match (usable(&endpoints[a]), usable(&endpoints[b])) {
                (true, true) => Some(cheaper(&endpoints[a], &endpoints[b], now)),
                (true, false) => Some(&endpoints[a]),
                (false, true) => Some(&endpoints[b]),
                // Both unusable: the best of the first two usable ones from a random start.
                (false, false) => {
                    let start = random(n);
                    let mut found = (0..n)
                        .map(|i| &endpoints[(start + i) % n])
                        .filter(|e| usable(e));
                    match (found.next(), found.next()) {
                        (Some(x), Some(y)) => Some(cheaper(x, y, now)),
                        (x, _) => x,
                    }
                }
            }
        }
    };
    match chosen {
        Some(endpoint) => Some(endpoint),
        // The only available endpoints are the ones to avoid: better one than nothing.
        None if !avoid.is_empty() => p2c(endpoints, &[], now, random),
        None => None,
    }
}

/// The cheaper of two endpoints; `a` on a tie.
fn cheaper<'a, E: Balanced>(a: &'a E, b: &'a E, now: Instant) -> &'a E {
    if b.cost(now) < a.cost(now) { b } else { a }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_core::SpiffeId;

    use super::super::load::PeakEwma;
    use super::*;

    /// An endpoint as P2C sees it: a real peak-EWMA load and weight, and whether it is
    /// connected and until when it is ejected.
    struct Fake {
        key: EndpointKey,
        weight: u32,
        load: PeakEwma,
        connected: bool,
        ejected_until: Option<Instant>,
    }

    impl Balanced for Fake {
        fn key(&self) -> &EndpointKey {
            &self.key
        }

        fn is_available(&self, now: Instant) -> bool {
            self.connected && self.ejected_until.is_none_or(|until| now >= until)
        }

        fn cost(&self, now: Instant) -> f64 {
            self.load.cost(self.weight, now)
        }
    }

    fn key(i: u16) -> EndpointKey {
        EndpointKey {
            addr: ([10, 0, 0, 1], 8000 + i).into(),
            identity: SpiffeId::parse("spiffe://td/ns/default/sa/web").unwrap(),
        }
    }

    /// Endpoint `i` with weight 1, connected, whose last response took `rtt_ms`.
    fn fake(epoch: Instant, i: u16, rtt_ms: u64) -> Fake {
        let load = PeakEwma::new(epoch);
        load.start();
        load.complete(epoch, epoch + Duration::from_millis(rtt_ms));
        Fake {
            key: key(i),
            weight: 1,
            load,
            connected: true,
            ejected_until: None,
        }
    }

    /// Which endpoint (by index) each of `rounds` picks chose; `None` counted at `n`.
    fn picks(endpoints: &[Fake], avoid: &[EndpointKey], now: Instant, rounds: usize) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut random = |n: usize| rng.usize(..n);
        let mut counts = vec![0; endpoints.len() + 1];
        for _ in 0..rounds {
            let index = p2c(endpoints, avoid, now, &mut random).map_or(endpoints.len(), |e| {
                endpoints.iter().position(|x| std::ptr::eq(x, e)).unwrap()
            });
            counts[index] += 1;
        }
        counts
    }

    #[test]
    fn prefers_the_cheaper_endpoint() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(50);
        // Two endpoints: both are compared every time, so the faster always wins.
        let two = [fake(epoch, 0, 50), fake(epoch, 1, 5)];
        assert_eq!(picks(&two, &[], now, 100), [0, 100, 0]);
        // Calls in flight raise a cost: ten on the fast one make it the dearer.
        for _ in 0..10 {
            two[1].load.start();
        }
        assert_eq!(picks(&two, &[], now, 100), [100, 0, 0]);
        // Among four, the slowest is never picked (it loses every comparison) and the fastest
        // wins every comparison it is in: half of all picks with four endpoints.
        let four = [
            fake(epoch, 0, 40),
            fake(epoch, 1, 10),
            fake(epoch, 2, 20),
            fake(epoch, 3, 30),
        ];
        let counts = picks(&four, &[], now, 4000);
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!((1800..2200).contains(&counts[1]), "{counts:?}");
        assert!(counts[1] > counts[2] && counts[2] > counts[3], "{counts:?}");
    }

    #[test]
    fn weights_scale_the_cost() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(30);
        // 30 ms at weight 4 costs less than 10 ms at weight 1.
        let mut heavy = fake(epoch, 0, 30);
        heavy.weight = 4;
        let two = [heavy, fake(epoch, 1, 10)];
        assert_eq!(picks(&two, &[], now, 100), [100, 0, 0]);
        // At weight 2 it costs more.
        let mut two = two;
        two[0].weight = 2;
        assert_eq!(picks(&two, &[], now, 100), [0, 100, 0]);
    }

    #[test]
    fn skips_ejected_and_unconnected_endpoints() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(50);
        // The cheapest is ejected, the next cheapest not connected: only the dearest is left.
        let mut endpoints = [fake(epoch, 0, 1), fake(epoch, 1, 2), fake(epoch, 2, 30)];
        endpoints[0].ejected_until = Some(now + Duration::from_secs(30));
        endpoints[1].connected = false;
        assert_eq!(picks(&endpoints, &[], now, 200), [0, 0, 200, 0]);
        // An ejection that has ended no longer counts: the cheapest is back, and wins every
        // draw it is in (the unconnected one still never picked).
        endpoints[0].ejected_until = Some(now);
        let counts = picks(&endpoints, &[], now, 300);
        assert_eq!((counts[1], counts[3]), (0, 0), "{counts:?}");
        assert!(counts[0] > counts[2] && counts[2] > 0, "{counts:?}");
        // None available: no pick.
        for e in &mut endpoints {
            e.connected = false;
        }
        assert_eq!(picks(&endpoints, &[], now, 10), [0, 0, 0, 10]);
        assert_eq!(picks(&[], &[], now, 10), [10]);
    }

    #[test]
    fn avoids_the_endpoint_of_a_failed_try_when_another_exists() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(50);
        // The avoided endpoint is the cheapest: it is still never picked.
        let mut endpoints = [fake(epoch, 0, 1), fake(epoch, 1, 20), fake(epoch, 2, 30)];
        let avoid = key(0);
        let counts = picks(&endpoints, std::slice::from_ref(&avoid), now, 300);
        assert_eq!(counts[0], 0, "{counts:?}");
        assert_eq!(counts[3], 0, "{counts:?}");
        // A hedged call avoids every endpoint it has a try outstanding on.
        let both = [key(0), key(1)];
        assert_eq!(picks(&endpoints, &both, now, 100), [0, 0, 100, 0]);
        // The only other one is unavailable: the avoided one rather than nothing.
        endpoints[1].connected = false;
        endpoints[2].connected = false;
        assert_eq!(
            picks(&endpoints, std::slice::from_ref(&avoid), now, 50),
            [50, 0, 0, 0]
        );
        // A single endpoint, avoided: still picked.
        assert_eq!(
            picks(&endpoints[..1], std::slice::from_ref(&avoid), now, 5),
            [5, 0]
        );
    }
}
