//! Helpers for the fault tests: steady gRPC load that counts every call's outcome, greeter
//! replicas that can be killed abruptly or drained gracefully, and waits on what a client has
//! applied from discovery.
//!
//! The replicas here are served with [`Mesh::serve_with_shutdown`], whose connections live in
//! the serving task: aborting that task drops every connection at once, without a GOAWAY (a
//! crashed process), while its shutdown signal drains (GOAWAY, calls in flight finish).
//! tonic's own server would not do for the abrupt case: it spawns each connection in a task
//! of its own that outlives the serving future.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use mesh_tonic::MeshChannel;
use mesh_tower::Mesh;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Harness;
use crate::greeter::{GreeterMode, TestGreeter, replica_of};

pub mod scenarios;

/// How many failed calls' errors a [`LoadReport`] keeps.
const KEPT_ERRORS: usize = 10;

/// Callers calling a greeter back to back (with a short pause) until stopped.
pub struct Load {
    running: Arc<AtomicBool>,
    counts: Arc<Counts>,
    callers: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    by_replica: Mutex<BTreeMap<String, u64>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// The first failed calls' statuses.
    pub errors: Vec<String>,
    /// Successful calls by the replica that answered.
    pub by_replica: BTreeMap<String, u64>,
}

impl LoadReport {
    /// Every call made.
    pub fn total(&self) -> u64 {
        self.ok + self.failed
    }

    /// The share of calls that succeeded, in percent (100 with no calls).
    pub fn success_percent(&self) -> f64 {
        if self.total() == 0 {
            return 100.0;
        }
        self.ok as f64 * 100.0 / self.total() as f64
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} calls failed ({:.3} % succeeded), by replica {:?}, first errors {:?}",
            self.failed,
            self.total(),
            self.success_percent(),
            self.by_replica,
            self.errors
        )
    }
}

impl Load {
    /// Starts `callers` callers on `channel`, each pausing `pause` between its calls.
    pub fn start(channel: &MeshChannel, callers: usize, pause: Duration) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let counts = Arc::new(Counts::default());
        let callers = (0..callers)
            .map(|caller| {
                let mut client = GreeterClient::new(channel.clone());
                let (running, counts) = (running.clone(), counts.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while running.load(Ordering::Relaxed) {
                        let request = HelloRequest {
                            name: format!("load:{caller}-{i}"),
                        };
                        i += 1;
                        match client.say_hello(request).await {
                            Ok(reply) => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                                let replica = replica_of(&reply.into_inner().message).to_owned();
                                *lock(&counts.by_replica).entry(replica).or_default() += 1;
                            }
                            Err(status) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                let mut errors = lock(&counts.errors);
                                if errors.len() < KEPT_ERRORS {
                                    errors.push(format!(
                                        "{:?}: {}",
                                        status.code(),
                                        status.message()
                                    ));
                                }
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            running,
            counts,
            callers,
        }
    }

    /// Calls that succeeded so far.
    pub fn ok(&self) -> u64 {
        self.counts.ok.load(Ordering::Relaxed)
    }

    /// Calls that failed so far.
    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Waits until `more` further calls have succeeded (or `timeout` passes): proof that
    /// traffic flows at this point of a test.
    pub async fn wait_for_calls(&self, more: u64, timeout: Duration) -> bool {
        let target = self.ok() + more;
        crate::eventually(timeout, || self.ok() >= target).await
    }

    /// Stops the callers (each finishes its call in flight) and reports.
    pub async fn stop(mut self) -> anyhow::Result<LoadReport> {
        self.running.store(false, Ordering::Relaxed);
        for caller in std::mem::take(&mut self.callers) {
            caller.await?;
        }
        Ok(LoadReport {
            ok: self.counts.ok.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            errors: lock(&self.counts.errors).clone(),
            by_replica: lock(&self.counts.by_replica).clone(),
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A test that failed before `stop` leaves no callers behind.
        self.running.store(false, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only: a caller that panicked cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A greeter replica served with [`Mesh::serve_with_shutdown`]: [`ServedGreeter::kill`]
/// drops it abruptly, [`ServedGreeter::drain`] stops it gracefully. Killed when dropped.
pub struct ServedGreeter {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handler (counts calls received).
    pub greeter: TestGreeter,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServedGreeter {
    /// Kills it as a crash would: the serving task is aborted, its listener and every
    /// connection are dropped at once (no GOAWAY; calls in flight are cut).
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Stops it gracefully and waits until it has: stops accepting, GOAWAY to every
    /// connection, calls in flight finish (within the grace it was started with).
    pub async fn drain(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await?;
        }
        Ok(())
    }
}

impl Drop for ServedGreeter {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Harness {
    /// Starts test greeter replica `replica` of `service` on `listener`, running as
    /// `account`, served by the mesh's own server; a drain lets calls in flight finish for up
    /// to `grace`.
    pub async fn served_greeter(
        &self,
        listener: TcpListener,
        replica: &str,
        account: &str,
        service: &str,
        grace: Duration,
    ) -> anyhow::Result<ServedGreeter> {
        let mesh = Mesh::start(self.settings(account, Some(service))).await?;
        let greeter = TestGreeter::new(replica, GreeterMode::Normal);
        let addr = listener.local_addr()?;
        let routes = tonic::service::Routes::new(GreeterServer::new(greeter.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = mesh
                .serve_with_shutdown(listener, routes, shutdown, grace)
                .await
            {
                tracing::warn!(%error, "test greeter stopped serving");
            }
        });
        Ok(ServedGreeter {
            addr,
            greeter,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// The endpoint addresses of `service` in the snapshot `mesh` has received, sorted.
pub fn endpoints_in_snapshot(mesh: &Mesh, service: &str) -> Vec<SocketAddr> {
    let snapshot = mesh.snapshot();
    let mut addrs: Vec<SocketAddr> = snapshot
        .destinations
        .iter()
        .filter(|d| d.service.name == service)
        .flat_map(|d| d.endpoints.iter().map(|e| e.address))
        .collect();
    addrs.sort();
    addrs
}

/// Waits (up to `timeout`) until `mesh` has received a snapshot in which `service`'s endpoints
/// are exactly `want`.
pub async fn wait_for_endpoints(
    mesh: &Mesh,
    service: &str,
    want: &[SocketAddr],
    timeout: Duration,
) -> bool {
    let mut want = want.to_vec();
    want.sort();
    crate::eventually(timeout, || endpoints_in_snapshot(mesh, service) == want).await
}
