//! A scriptable greeter for tests: the request's `name` chooses the answer, and every replica
//! counts what it received.
//!
//! A name is `<command>` or `<command>:<tag>` (the tag only makes names distinct):
//!
//! | command       | answer                                                              |
//! |---------------|---------------------------------------------------------------------|
//! | `fail-once`   | UNAVAILABLE the first time this replica sees this name, then OK      |
//! | `fail-always` | always UNAVAILABLE                                                  |
//! | `internal`    | always INTERNAL                                                     |
//! | `slow-{ms}`   | OK after `ms` milliseconds (`<replica> slept {ms} ms`)              |
//! | `deadline`    | OK, the message carrying the `grpc-timeout` the replica received    |
//! | anything else | OK                                                                  |
//!
//! An OK message is `<replica> <detail>`: [`replica_of`] reads the replica back. A replica's
//! [`GreeterMode`] can make it fail every call, or answer some of its calls slowly, whatever
//! the name. A replica counts the slow answers it started and those whose caller went away
//! (the stream reset) before the answer, and the client connections its calls came on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use examples::hello::greeter_server::Greeter;
use examples::hello::{HelloReply, HelloRequest};
use mesh_tower::Mesh;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::Harness;

/// How a replica behaves whatever the name asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GreeterMode {
    /// As the name says.
    #[default]
    Normal,
    /// Every call fails with UNAVAILABLE.
    FailAll,
    /// Every `every`-th call this replica receives (the `every`-th, the `2 × every`-th, ...)
    /// is answered after `ms` milliseconds, whatever its name; the others as the name says.
    SlowEvery {
        /// One call in this many is slow.
        every: u32,
        /// How slow.
        ms: u64,
    },
}

/// What a replica counted beyond the names.
#[derive(Debug, Default)]
struct Counts {
    /// Calls received.
    calls: AtomicU32,
    /// Slow answers begun (by the name or the mode).
    slow_started: AtomicU32,
    /// Slow answers whose call was cancelled before they were sent.
    slow_cancelled: AtomicU32,
    /// The client connections calls came on (the caller's address).
    connections: Mutex<HashSet<SocketAddr>>,
}

/// Counts a slow answer as cancelled unless it was sent.
struct SlowAnswer<'a> {
    counts: &'a Counts,
    sent: bool,
}

impl Drop for SlowAnswer<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.counts.slow_cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A scriptable greeter replica's handler; clones share their counts.
#[derive(Debug, Clone)]
pub struct TestGreeter {
    replica: String,
    mode: GreeterMode,
    /// Calls received per name.
    seen: Arc<Mutex<HashMap<String, u32>>>,
    counts: Arc<Counts>,
}

impl TestGreeter {
    /// A handler for replica `replica` behaving as `mode` says.
    pub fn new(replica: &str, mode: GreeterMode) -> Self {
        Self {
            replica: replica.to_owned(),
            mode,
            seen: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// Calls this replica received (answered or not).
    pub fn received(&self) -> u32 {
        self.lock().values().sum()
    }

    /// Calls this replica received with this exact name.
    pub fn received_name(&self, name: &str) -> u32 {
        self.lock().get(name).copied().unwrap_or(0)
    }

    /// Slow answers this replica began.
    pub fn slow_started(&self) -> u32 {
        self.counts.slow_started.load(Ordering::Relaxed)
    }

    /// Slow answers this replica began whose call was cancelled (its stream reset) first.
    pub fn slow_cancelled(&self) -> u32 {
        self.counts.slow_cancelled.load(Ordering::Relaxed)
    }

    /// The client connections (by the caller's address) this replica's calls came on.
    pub fn connections(&self) -> usize {
        self.counts
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Sleeps `ms` milliseconds, counting a slow answer begun, and cancelled if the call
    /// is dropped first.
    async fn slow(&self, ms: u64) {
        self.counts.slow_started.fetch_add(1, Ordering::Relaxed);
        let mut answer = SlowAnswer {
            counts: &self.counts,
            sent: false,
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        answer.sent = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A test that panicked while holding the lock has failed already.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[tonic::async_trait]
impl Greeter for TestGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.get_ref().name.clone();
        if let Some(info) = request.extensions().get::<mesh_tonic::MeshConnectInfo>() {
            self.counts
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(info.remote_addr());
        }
        let call = self.counts.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let times_seen = {
            let mut seen = self.lock();
            let count = seen.entry(name.clone()).or_default();
            *count += 1;
            *count
        };
        if self.mode == GreeterMode::FailAll {
            return Err(Status::unavailable(format!(
                "{} fails every call",
                self.replica
            )));
        }
        if let GreeterMode::SlowEvery { every, ms } = self.mode
            && call.is_multiple_of(every.max(1))
        {
            self.slow(ms).await;
            return Ok(Response::new(HelloReply {
                message: format!("{} slept {ms} ms", self.replica),
            }));
        }
        let command = name.split(':').next().unwrap_or_default();
        let detail = match command {
            "fail-once" if times_seen == 1 => {
                return Err(Status::unavailable(format!(
                    "{} fails the first call",
                    self.replica
                )));
            }
            "fail-always" => {
                return Err(Status::unavailable(format!(
                    "{} always fails",
                    self.replica
                )));
            }
            "internal" => return Err(Status::internal(format!("{} is broken", self.replica))),
            "deadline" => request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned(),
            _ => match command.strip_prefix("slow-").map(str::parse::<u64>) {
                Some(Ok(ms)) => {
                    self.slow(ms).await;
                    format!("slept {ms} ms")
                }
                _ => "hello".to_owned(),
            },
        };
        Ok(Response::new(HelloReply {
            message: format!("{} {detail}", self.replica),
        }))
    }
}

/// The replica that wrote an OK message of a [`TestGreeter`].
pub fn replica_of(message: &str) -> &str {
    message.split(' ').next().unwrap_or_default()
}

/// The replicas that answer `calls` calls through `client` (`probe:<i>` names), sorted,
/// each once.
pub async fn replicas_answering(
    client: &examples::hello::greeter_client::GreeterClient<mesh_tonic::MeshChannel>,
    calls: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    for i in 0..calls {
        let reply = client
            .clone()
            .say_hello(HelloRequest {
                name: format!("probe:{i}"),
            })
            .await
            .unwrap_or_else(|status| panic!("probe {i} failed: {status:?}"));
        let replica = replica_of(&reply.into_inner().message).to_owned();
        if !seen.contains(&replica) {
            seen.push(replica);
        }
    }
    seen.sort();
    seen
}

/// A running test greeter replica; stops when dropped.
pub struct TestGreeterReplica {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handler (counts calls received).
    pub greeter: TestGreeter,
    task: JoinHandle<()>,
}

impl Drop for TestGreeterReplica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    /// Starts normal replicas of the service `greeter` (account `greeter`), each named and on
    /// its listener, all at once.
    pub async fn greeters(
        &self,
        replicas: impl IntoIterator<Item = (TcpListener, &str)>,
    ) -> anyhow::Result<Vec<TestGreeterReplica>> {
        futures_util::future::try_join_all(replicas.into_iter().map(|(listener, name)| {
            self.test_greeter(listener, name, "greeter", "greeter", GreeterMode::Normal)
        }))
        .await
    }

    /// Starts test greeter replica `replica` of `service` on `listener`, running as `account`.
    pub async fn test_greeter(
        &self,
        listener: TcpListener,
        replica: &str,
        account: &str,
        service: &str,
        mode: GreeterMode,
    ) -> anyhow::Result<TestGreeterReplica> {
        let mesh = Mesh::start(self.settings(account, Some(service))).await?;
        let greeter = TestGreeter {
            replica: replica.to_owned(),
            mode,
            seen: Arc::default(),
            counts: Arc::default(),
        };
        let addr = listener.local_addr()?;
        let task = crate::serve_greeter(mesh, listener, greeter.clone())?;
        Ok(TestGreeterReplica {
            addr,
            greeter,
            task,
        })
    }
}
