//! The worker that keeps every configured JWK Set fresh: fetch what is due, keep the last
//! good set on failure, publish when anything changed, sleep until the next is due or the
//! config changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::jwt::JwtKeys;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::JwksOptions;
use super::fetch::Fetcher;
use crate::state::{Jwks, StateStore};

/// One URI's cache entry.
struct Entry {
    /// The last good document, if any fetch succeeded.
    good: Option<Arc<str>>,
    /// When to fetch again.
    due: Instant,
}

/// Spawns the worker; it ends when the state store is dropped.
pub(crate) fn spawn(state: Arc<StateStore>, options: JwksOptions) -> JoinHandle<()> {
    tokio::spawn(run(state, options))
}

async fn run(state: Arc<StateStore>, options: JwksOptions) {
    let fetcher = Fetcher::new(options.timeout);
    let mut states = state.subscribe();
    let mut cache: BTreeMap<String, Entry> = BTreeMap::new();
    loop {
        let uris: Vec<String> = states
            .borrow_and_update()
            .config
            .jwks_uris()
            .map(str::to_owned)
            .collect();
        cache.retain(|uri, _| uris.contains(uri));
        let now = Instant::now();
        let due: Vec<&String> = uris
            .iter()
            .filter(|uri| cache.get(*uri).is_none_or(|e| e.due <= now))
            .collect();
        // Fetched side by side: one slow issuer does not hold up the others.
        let results =
            futures_util::future::join_all(due.iter().map(|uri| fetch_one(&fetcher, uri))).await;
        for (uri, result) in due.into_iter().zip(results) {
            let entry = cache.entry(uri.clone()).or_insert(Entry {
                good: None,
                due: now,
            });
            match result {
                Ok(document) => {
                    entry.good = Some(document);
                    entry.due = Instant::now() + jittered(options.refresh);
                }
                Err(error) => {
                    tracing::warn!(
                        uri = %uri,
                        %error,
                        kept_last_good = entry.good.is_some(),
                        "JWKS fetch failed"
                    );
                    entry.due = Instant::now() + options.retry;
                }
            }
        }
        let jwks: Jwks = cache
            .iter()
            .filter_map(|(uri, e)| Some((uri.clone(), e.good.clone()?)))
            .collect();
        if let Some(version) = state.publish_jwks(jwks) {
            tracing::info!(version, "JWKS changed; published");
        }
        let next = cache.values().map(|e| e.due).min();
        tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep_until(next) => {}
        }
    }
}

/// The document at `uri`, when it is a usable JWK Set.
async fn fetch_one(fetcher: &Fetcher, uri: &str) -> Result<Arc<str>, String> {
    let document = fetcher.fetch(uri).await.map_err(|e| e.to_string())?;
    JwtKeys::parse(&document).map_err(|e| e.to_string())?;
    Ok(Arc::from(document))
}

/// Until `when`, or forever.
async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// `period` ±10%.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(0.9 + fastrand::f64() * 0.2)
}
