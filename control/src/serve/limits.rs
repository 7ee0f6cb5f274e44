//! Bounds on the connections the control service holds, and the bookkeeping of TLS handshakes
//! in progress that enforces them.
//!
//! Every connection, from its accept to its close, holds one of [`max_connections`] slots; a
//! connection accepted when none is free is closed at once, so the process never runs out of
//! file descriptors serving a flood (the binary also raises its descriptor limit at start).
//!
//! Handshakes in progress have a budget of their own, so that connections which open TCP and
//! then stall (send nothing, or half a ClientHello) cannot crowd out clients that complete
//! their handshake in milliseconds:
//! - per source address ([`max_handshakes_per_ip`]; IPv6 by /64, the block one host usually
//!   has): a new connection from a source at its share is closed at once;
//! - in total ([`max_handshakes`]): when it is full, the *oldest* handshake in progress is
//!   abandoned to make room. A stalled handshake is the oldest one soon enough, while a
//!   legitimate one is over before a flood could push it out, so a flood from many sources
//!   costs legitimate clients nothing but the flood's own slots.
//!
//! Each handshake also has a time limit ([`handshake_timeout`]).
//!
//! An established connection with no stream open for [`idle_timeout`] (none since it opened,
//! or none since its last one ended) is sent a GOAWAY and closed: a subscriber's Watch stream
//! is always open, a workload's Certify call is over in milliseconds, so only a connection
//! nobody uses is idle. Pings do not count: a client that only answers them holds a slot
//! as surely as a silent one.
//!
//! [`max_connections`]: ConnectionLimits::max_connections
//! [`max_handshakes`]: ConnectionLimits::max_handshakes
//! [`max_handshakes_per_ip`]: ConnectionLimits::max_handshakes_per_ip
//! [`handshake_timeout`]: ConnectionLimits::handshake_timeout
//! [`idle_timeout`]: ConnectionLimits::idle_timeout

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use tokio::task::{AbortHandle, Id, JoinSet};

/// Default [`ConnectionLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`ConnectionLimits::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
/// Default [`ConnectionLimits::max_handshakes_per_ip`].
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: usize = 32;
/// Default [`ConnectionLimits::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ConnectionLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often, at most, refused connections are logged at `warn` (with how many there were):
/// a flood must not flood the log too.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bounds on the control service's connections (see the module docs of `serve::limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once, handshakes included (default 10,000). One over it is closed
    /// as soon as it is accepted. Each costs a file descriptor and, established, some tens of
    /// kilobytes of TLS and HTTP/2 state.
    pub max_connections: usize,
    /// TLS handshakes in progress at once (default 256); when full, the oldest is abandoned
    /// to make room for a new one.
    pub max_handshakes: usize,
    /// TLS handshakes in progress at once from one source address, IPv6 by /64 (default 32);
    /// a new connection from a source at its share is closed at once.
    pub max_handshakes_per_ip: usize,
    /// How long a TLS handshake may take before it is abandoned (default 10 s).
    pub handshake_timeout: Duration,
    /// How long an established connection may have no stream open before it is closed
    /// (default 60 s; closed between one and two periods after its last stream ended).
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_ip: DEFAULT_MAX_HANDSHAKES_PER_IP,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// A bound of [`ConnectionLimits`] that lets nothing through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidLimit {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl ConnectionLimits {
    /// Checks that every bound lets something through; the error names the field.
    pub(crate) fn check(&self) -> Result<(), InvalidLimit> {
        let positive = [
            ("max_connections", self.max_connections),
            ("max_handshakes", self.max_handshakes),
            ("max_handshakes_per_ip", self.max_handshakes_per_ip),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(InvalidLimit {
                    field,
                    problem: "must be at least 1",
                });
            }
        }
        let periods = [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        for (field, period) in periods {
            if period.is_zero() {
                return Err(InvalidLimit {
                    field,
                    problem: "must be more than zero",
                });
            }
        }
        Ok(())
    }
}

/// Whose share a handshake counts against: the address, an IPv4-mapped IPv6 address as the
/// IPv4 one, other IPv6 addresses by their /64.
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// The TLS handshakes in progress: their tasks, and how many each source has.
///
/// Owned by the accept loop alone, so it needs no lock; finished handshakes are counted out
/// when the loop reaps them ([`Handshakes::reap`]) before it admits the next connection.
pub(crate) struct Handshakes {
    limits: ConnectionLimits,
    tasks: JoinSet<()>,
    /// The handshakes in progress, with their source and a handle to abandon them.
    live: HashMap<Id, (IpAddr, AbortHandle)>,
    /// Handshakes in the order they started, oldest first; ids of finished ones are skipped
    /// (and swept out once they outnumber the live ones).
    order: VecDeque<Id>,
    per_source: HashMap<IpAddr, usize>,
    refusals: RefusalLog,
}

/// What [`Handshakes::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Room was made (by abandoning the oldest handshake when the total was full).
    Admitted,
    /// The source has its share of handshakes in progress.
    SourceFull,
}

impl Handshakes {
    pub(crate) fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            tasks: JoinSet::new(),
            live: HashMap::new(),
            order: VecDeque::new(),
            per_source: HashMap::new(),
            refusals: RefusalLog::default(),
        }
    }

    /// Counts out the handshakes that finished.
    pub(crate) fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(error) => error.id(),
            };
            self.forget(id);
        }
    }

    /// Decides whether a handshake from `ip` may start, making room for it when the total is
    /// full.
    pub(crate) fn admit(&mut self, ip: IpAddr) -> Admission {
        let source = source_of(ip);
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.limits.max_handshakes_per_ip {
            self.refusals.refused(RefusalLog::SOURCE, ip);
            return Admission::SourceFull;
        }
        while self.live.len() >= self.limits.max_handshakes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((old_source, handle)) = self.live.remove(&oldest) {
                handle.abort();
                self.count_out(old_source);
                self.refusals.refused(RefusalLog::EVICTED, ip);
            }
        }
        Admission::Admitted
    }

    /// Runs an admitted handshake from `ip`.
    pub(crate) fn spawn<F>(&mut self, ip: IpAddr, handshake: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let source = source_of(ip);
        let handle = self.tasks.spawn(handshake);
        let id = handle.id();
        self.live.insert(id, (source, handle));
        self.order.push_back(id);
        *self.per_source.entry(source).or_insert(0) += 1;
        if self.order.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.order.retain(|id| live.contains_key(id));
        }
    }

    /// Notes a connection closed because every connection slot was taken.
    pub(crate) fn refused_at_capacity(&mut self, ip: IpAddr) {
        self.refusals.refused(RefusalLog::CAPACITY, ip);
    }

    /// Handshakes in progress.
    #[cfg(test)]
    fn in_progress(&self) -> usize {
        self.live.len()
    }

    fn forget(&mut self, id: Id) {
        if let Some((source, _)) = self.live.remove(&id) {
            self.count_out(source);
        }
    }

    fn count_out(&mut self, source: IpAddr) {
        if let Some(count) = self.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

/// Counts refused connections and logs them at `warn` at most every
/// [`REFUSAL_LOG_INTERVAL`] (each one at `debug`).
#[derive(Debug, Default)]
struct RefusalLog {
    /// Per reason, since the last `warn`.
    counts: [u64; 3],
    last_warn: Option<Instant>,
}

impl RefusalLog {
    const CAPACITY: usize = 0;
    const SOURCE: usize = 1;
    const EVICTED: usize = 2;

    fn refused(&mut self, reason: usize, ip: IpAddr) {
        const WHY: [&str; 3] = [
            "closed a new connection: every connection slot is taken",
            "closed a new connection: its source has its share of TLS handshakes in progress",
            "abandoned the oldest TLS handshake in progress to make room for a new one",
        ];
        tracing::debug!(peer = %ip, "{}", WHY[reason]);
        self.counts[reason] += 1;
        let now = Instant::now();
        if self
            .last_warn
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        self.last_warn = Some(now);
        let [at_capacity, source_full, evicted] = std::mem::take(&mut self.counts);
        tracing::warn!(
            at_capacity,
            source_full,
            evicted,
            last_peer = %ip,
            "connection limits in force (counts since the last such warning)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn limits(total: usize, per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_handshakes: total,
            max_handshakes_per_ip: per_ip,
            ..ConnectionLimits::default()
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_of(v4(1)), v4(1));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(source_of(mapped), v4(1));
    }

    #[test]
    fn zero_bounds_are_refused_by_name() {
        assert_eq!(ConnectionLimits::default().check(), Ok(()));
        let zero = ConnectionLimits {
            max_handshakes_per_ip: 0,
            ..ConnectionLimits::default()
        };
        assert!(
            zero.check()
                .expect_err("refused")
                .to_string()
                .starts_with("max_handshakes_per_ip:")
        );
    }

    #[tokio::test]
    async fn a_source_gets_its_share_and_a_full_total_drops_the_oldest() {
        let mut handshakes = Handshakes::new(limits(4, 2));
        let stalled = std::future::pending::<()>;
        // Source 1 gets two, then is refused; the total does not move.
        for _ in 0..2 {
            assert_eq!(handshakes.admit(v4(1)), Admission::Admitted);
            handshakes.spawn(v4(1), stalled());
        }
        assert_eq!(handshakes.admit(v4(1)), Admission::SourceFull);
        assert_eq!(handshakes.in_progress(), 2);
        // Sources 2 and 3 fill the total; source 4 pushes out the oldest (source 1's first),
        // which gives source 1 room again.
        for source in [2, 3] {
            assert_eq!(handshakes.admit(v4(source)), Admission::Admitted);
            handshakes.spawn(v4(source), stalled());
        }
        assert_eq!(handshakes.admit(v4(4)), Admission::Admitted);
        handshakes.spawn(v4(4), stalled());
        assert_eq!(handshakes.in_progress(), 4);
        assert_eq!(handshakes.per_source.get(&v4(1)), Some(&1));
        assert_eq!(handshakes.admit(v4(1)), Admission::Admitted);

        // A finished handshake is counted out when reaped.
        handshakes.spawn(v4(5), async {});
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        handshakes.reap();
        assert_eq!(handshakes.per_source.get(&v4(5)), None);
        assert!(handshakes.in_progress() <= 4);
    }
}
