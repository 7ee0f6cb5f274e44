//! `meshctl top`: live calls/s, success rate and latency per edge (caller -> service), read
//! from every control replica's `GET /ui/graph.json` (the live view's data; see the control
//! service's `view` module) and merged: a workload reports to the replica it is connected to,
//! so each replica knows the calls of its own subscribers.
//!
//! Merging replicas: calls, failures and calls/s add up; the success rate is recomputed from
//! the sums; p50 and p99 are the calls-weighted mean and the highest of the replicas' (the
//! sketches themselves are not exported), which is exact with one replica.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::admin_client;
use super::error::CtlError;

/// What `top` shows at one refresh.
#[derive(Debug, Clone, Serialize)]
pub struct Top {
    /// Every edge with calls in the window, busiest first.
    pub edges: Vec<EdgeRow>,
    /// The window the figures cover, in seconds.
    pub window_seconds: u64,
    /// Replicas that could not be read, with why.
    pub unreachable: Vec<(String, String)>,
}

/// One edge, merged over the replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRow {
    /// The caller: a service, or the SPIFFE ID of a workload that serves none.
    pub from: String,
    /// The destination service.
    pub to: String,
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Calls per second.
    pub calls_per_second: f64,
    /// From 0 to 1.
    pub success_rate: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphPage {
    window_seconds: u64,
    edges: Vec<EdgeRow>,
}

/// Reads and merges the live view of every replica behind `targets`.
pub fn top(targets: &[String]) -> Result<Top, CtlError> {
    let mut merged: BTreeMap<(String, String), EdgeRow> = BTreeMap::new();
    let mut unreachable = Vec::new();
    let mut window_seconds = 0;
    for target in targets {
        for addr in admin_client::replicas(target)? {
            let page = admin_client::get(addr, "/ui/graph.json").and_then(|body| {
                serde_json::from_str::<GraphPage>(&body).map_err(|e| CtlError::Admin {
                    target: addr.to_string(),
                    message: format!("/ui/graph.json: {e}"),
                })
            });
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    unreachable.push((addr.to_string(), error.to_string()));
                    continue;
                }
            };
            window_seconds = window_seconds.max(page.window_seconds);
            for edge in page.edges {
                let key = (edge.from.clone(), edge.to.clone());
                match merged.get_mut(&key) {
                    None => {
                        merged.insert(key, edge);
                    }
                    Some(row) => merge(row, &edge),
                }
            }
        }
    }
    let mut edges: Vec<EdgeRow> = merged.into_values().collect();
    edges.sort_by(|a, b| {
        b.calls_per_second
            .total_cmp(&a.calls_per_second)
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    Ok(Top {
        edges,
        window_seconds,
        unreachable,
    })
}

/// Adds `other`'s figures (another replica's view of the same edge) to `row`.
fn merge(row: &mut EdgeRow, other: &EdgeRow) {
    let calls = row.calls + other.calls;
    if calls > 0 {
        // Calls-weighted: the replica that saw more calls says more about the median.
        row.p50_ms =
            (row.p50_ms * row.calls as f64 + other.p50_ms * other.calls as f64) / calls as f64;
    }
    row.p99_ms = row.p99_ms.max(other.p99_ms);
    row.calls = calls;
    row.failures += other.failures;
    row.calls_per_second += other.calls_per_second;
    row.success_rate = if calls == 0 {
        1.0
    } else {
        1.0 - row.failures as f64 / calls as f64
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(calls: u64, failures: u64, p50: f64, p99: f64) -> EdgeRow {
        EdgeRow {
            from: "a".into(),
            to: "b".into(),
            calls,
            failures,
            calls_per_second: calls as f64 / 30.0,
            success_rate: 1.0 - failures as f64 / calls as f64,
            p50_ms: p50,
            p99_ms: p99,
        }
    }

    #[test]
    fn replicas_views_of_one_edge_add_up() {
        let mut merged = row(300, 3, 1.0, 5.0);
        merge(&mut merged, &row(100, 7, 2.0, 9.0));
        assert_eq!(merged.calls, 400);
        assert_eq!(merged.failures, 10);
        assert!((merged.success_rate - 0.975).abs() < 1e-9);
        assert!((merged.calls_per_second - 400.0 / 30.0).abs() < 1e-9);
        assert!((merged.p50_ms - 1.25).abs() < 1e-9);
        assert_eq!(merged.p99_ms, 9.0);
    }
}
