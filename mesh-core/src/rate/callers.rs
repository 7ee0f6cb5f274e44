//! The per-caller state of one rate-limit policy: a TAT per caller identity, bounded so that
//! many identities cannot grow memory without end.
//!
//! Callers' identities are verified SPIFFE IDs, which only the mesh's CA issues, so the bound
//! is a defence in depth rather than the only guard. When the table is full, a new caller
//! first makes it forget every caller at rest (their state is what a new entry would be, so
//! forgetting them changes no decision); when every caller is active, the one closest to rest
//! (the smallest TAT) is forgotten, which can only let that caller through a little early,
//! by at most its burst.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::gcra::Gcra;
use crate::spiffe::SpiffeId;

/// The most callers one policy tracks at once.
pub const MAX_TRACKED_CALLERS: usize = 10_000;

/// One caller's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The caller's own TAT (unused when an override applies).
    tat: u64,
    /// The override that names the caller, looked up once, when it is first seen.
    override_index: Option<usize>,
}

/// What applies to a caller, as [`Callers::admit`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallerLimit {
    /// The caller's own limit decided.
    Own(Result<(), u64>),
    /// An override names the caller: its shared limit decides.
    Override(usize),
}

/// The callers of one policy, behind one short lock.
#[derive(Debug)]
pub(crate) struct Callers {
    table: Mutex<Table>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Table {
    /// Keyed by the SPIFFE ID's text, so a lookup borrows the caller's `&str`. Hashed with
    /// foldhash rather than SipHash: a lookup per call, of keys (verified SPIFFE IDs) that
    /// only the mesh's CA issues, so flooding it with chosen keys is not open to callers; the
    /// seed is still random per table.
    by_identity: HashMap<Box<str>, Entry, foldhash::fast::RandomState>,
    /// Callers without an identity (plaintext, in permissive mode) share one state.
    unauthenticated: u64,
}

impl Callers {
    /// A table of at most `capacity` callers (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            capacity: capacity.max(1),
        }
    }

    /// Decides a call from `caller` at `now` under its own limit `limit`, unless an override
    /// names it (`find_override`, asked only the first time a caller is seen).
    pub(crate) fn admit(
        &self,
        caller: Option<&SpiffeId>,
        limit: Option<&Gcra>,
        now: u64,
        find_override: impl FnOnce(&SpiffeId) -> Option<usize>,
    ) -> CallerLimit {
        // Plain arithmetic under the lock: a panic elsewhere cannot leave it inconsistent.
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(caller) = caller else {
            return CallerLimit::Own(match limit {
                Some(limit) => limit.decide(table.unauthenticated, now).map(|tat| {
                    table.unauthenticated = tat;
                }),
                None => Ok(()),
            });
        };
        let entry = match table.by_identity.get_mut(caller.as_str()) {
            Some(entry) => entry,
            None => {
                let override_index = find_override(caller);
                if table.by_identity.len() >= self.capacity {
                    table.make_room(self.capacity, now);
                }
                table
                    .by_identity
                    .entry(caller.as_str().into())
                    .or_insert(Entry {
                        tat: 0,
                        override_index,
                    })
            }
        };
        if let Some(index) = entry.override_index {
            return CallerLimit::Override(index);
        }
        CallerLimit::Own(match limit {
            Some(limit) => limit.decide(entry.tat, now).map(|tat| entry.tat = tat),
            None => Ok(()),
        })
    }

    /// Gives back the call `caller` was admitted for (a later limit refused it), so a call
    /// that was not served does not count against the caller.
    pub(crate) fn refund(&self, caller: Option<&SpiffeId>, limit: &Gcra) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = match caller {
            None => &mut table.unauthenticated,
            Some(caller) => match table.by_identity.get_mut(caller.as_str()) {
                Some(entry) => &mut entry.tat,
                None => return,
            },
        };
        *tat = tat.saturating_sub(limit.interval_ns());
    }

    /// How many callers are tracked now.
    pub(crate) fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_identity
            .len()
    }
}

impl Table {
    /// Makes room for one more caller: forgets every caller at rest, else the one closest
    /// to rest.
    fn make_room(&mut self, capacity: usize, now: u64) {
        // An overridden caller's own TAT stays 0: it is always "at rest" here, and is found
        // again (with its override) when it calls next.
        self.by_identity.retain(|_, entry| entry.tat > now);
        if self.by_identity.len() < capacity {
            return;
        }
        let oldest = self
            .by_identity
            .iter()
            .min_by_key(|(_, entry)| entry.tat)
            .map(|(key, _)| key.clone());
        if let Some(oldest) = oldest {
            self.by_identity.remove(&oldest);
        }
    }
}
