//! The watchers: one kube-runtime watcher per kind, merged into one stream that feeds the
//! [`ClusterIndex`]; the first full sync before the service starts serving; and publishing
//! every change as the next version of the state.
//!
//! Watchers restart themselves with kube's default backoff, relisting after a `410 Gone`;
//! their errors are logged and the last good config keeps serving. A burst of events (a
//! relist, a rollout) is applied as a whole before the config is rebuilt, so it becomes one
//! version rather than one per object.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, StreamExt as _};
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use mesh_core::TrustDomain;
use mesh_core::config::ValidConfig;
use tokio::task::JoinHandle;

use super::KubernetesSource;
use super::crd::{
    AuthorizationPolicy, FaultInjection, LocalRateLimitPolicy, RequestAuthentication,
};
use super::index::{BuildError, ClusterIndex, RouteStatus};
use super::lease::LeaderLease;
use crate::state::StateStore;

/// Why the first sync with the API server did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Some kinds were not listed in time (the API server is unreachable, RBAC forbids a
    /// list, or a CRD is not installed; the logs carry the watchers' errors).
    #[error(
        "kubernetes: not synced after {timeout:?}: {kinds} not listed (see the watcher errors logged)"
    )]
    Timeout {
        /// How long start-up waited.
        timeout: Duration,
        /// The kinds not listed, comma-separated.
        kinds: String,
    },
    /// The objects listed could not be assembled into a config (a bug).
    #[error("kubernetes: {0}")]
    Build(String),
}

/// One event from one of the watchers. Boxed: the kinds differ in size by kilobytes, and one
/// allocation is small beside parsing the object's JSON.
enum ClusterEvent {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Pod(Box<watcher::Event<Pod>>),
    HttpRoute(Box<watcher::Event<HttpRoute>>),
    GrpcRoute(Box<watcher::Event<GrpcRoute>>),
    Policy(Box<watcher::Event<AuthorizationPolicy>>),
    Authn(Box<watcher::Event<RequestAuthentication>>),
    Fault(Box<watcher::Event<FaultInjection>>),
    RateLimit(Box<watcher::Event<LocalRateLimitPolicy>>),
}

/// The index and its watchers after the first sync, ready to follow changes.
pub(crate) struct Syncer {
    index: ClusterIndex,
    events: BoxStream<'static, Result<ClusterEvent, watcher::Error>>,
    refused: BTreeSet<String>,
    routes: tokio::sync::watch::Sender<Vec<RouteStatus>>,
    /// The route status last compared with what `routes` holds.
    sent_routes: Option<Arc<Vec<RouteStatus>>>,
    /// The client and Lease of the route status writer, when status is written.
    status: Option<(Client, LeaderLease)>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").finish_non_exhaustive()
    }
}

/// Starts the watchers and waits until every kind has been listed once; returns the config
/// built from that list and the syncer that follows changes from there. `namespace` is the
/// control service's own (where the status Lease lives).
pub(crate) async fn sync(
    source: &KubernetesSource,
    trust_domain: &TrustDomain,
    namespace: &str,
) -> Result<(ValidConfig, Syncer), SyncError> {
    let status = source.write_status.then(|| {
        let lease = LeaderLease::new(source.client.clone(), namespace, source.holder.clone());
        (source.client.clone(), lease)
    });
    let mut syncer = Syncer {
        index: ClusterIndex::new(trust_domain.clone(), source.default_policy.clone()),
        events: events(source.client.clone()),
        refused: BTreeSet::new(),
        routes: tokio::sync::watch::channel(Vec::new()).0,
        sent_routes: None,
        status,
    };
    let deadline = tokio::time::sleep(source.sync_timeout);
    tokio::pin!(deadline);
    while !syncer.index.unsynced().is_empty() {
        tokio::select! {
            event = syncer.events.next() => match event {
                Some(event) => {
                    syncer.handle(event);
                }
                // The merged stream never ends: each watcher restarts itself.
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    let unsynced = syncer.index.unsynced();
    if !unsynced.is_empty() {
        return Err(SyncError::Timeout {
            timeout: source.sync_timeout,
            kinds: unsynced.join(", "),
        });
    }
    let config = syncer
        .build()
        .map_err(|e| SyncError::Build(e.to_string()))?;
    tracing::info!(services = config.services().count(), "kubernetes: synced");
    Ok((config, syncer))
}

/// Lists the cluster once, as the control service does at start (without writing route
/// status), and returns the config it would serve with every object it would leave out and
/// why; for `meshctl check --kubernetes`.
pub async fn read_once(
    source: &KubernetesSource,
    trust_domain: &TrustDomain,
) -> Result<(ValidConfig, Vec<String>), SyncError> {
    let source = KubernetesSource {
        write_status: false,
        ..source.clone()
    };
    let (config, syncer) = sync(&source, trust_domain, "").await?;
    Ok((config, syncer.refused.into_iter().collect()))
}

// === impl Syncer ===

impl Syncer {
    /// Follows changes and publishes each new config into `state` until aborted; with the
    /// route status writer, when status is written.
    pub(crate) fn spawn(mut self, state: Arc<StateStore>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some((client, lease)) = self.status.take() {
            tasks.push(super::status::spawn_writer(
                client,
                lease,
                self.routes.subscribe(),
            ));
        }
        tasks.push(tokio::spawn(async move {
            while let Some(event) = self.events.next().await {
                let mut changed = self.handle(event);
                // Apply whatever else is already waiting, so a burst becomes one version.
                while let Some(Some(event)) = self.events.next().now_or_never() {
                    changed |= self.handle(event);
                }
                if !changed {
                    continue;
                }
                match self.build() {
                    Ok(config) => match state.publish(config) {
                        Some(version) => tracing::info!(version, "kubernetes: config published"),
                        None => tracing::debug!("kubernetes: objects changed, config did not"),
                    },
                    Err(error) => {
                        tracing::error!(%error, "kubernetes: the last good config keeps serving");
                    }
                }
            }
            tracing::error!("kubernetes: the watch streams ended; config is frozen");
        }));
        tasks
    }

    /// Applies one event; returns whether the index changed.
    fn handle(&mut self, event: Result<ClusterEvent, watcher::Error>) -> bool {
        let index = &mut self.index;
        match event {
            Ok(ClusterEvent::Service(e)) => index.apply(*e),
            Ok(ClusterEvent::Slice(e)) => index.apply(*e),
            Ok(ClusterEvent::Pod(e)) => index.apply(*e),
            Ok(ClusterEvent::HttpRoute(e)) => index.apply(*e),
            Ok(ClusterEvent::GrpcRoute(e)) => index.apply(*e),
            Ok(ClusterEvent::Policy(e)) => index.apply(*e),
            Ok(ClusterEvent::Authn(e)) => index.apply(*e),
            Ok(ClusterEvent::Fault(e)) => index.apply(*e),
            Ok(ClusterEvent::RateLimit(e)) => index.apply(*e),
            Err(error) => {
                // The watcher backs off and retries (relisting when its resource version is
                // gone); until then the objects it had stay as they were.
                tracing::warn!(%error, "kubernetes: watch failed; retrying");
                false
            }
        }
    }

    /// Builds the config, logging each newly refused object once.
    fn build(&mut self) -> Result<ValidConfig, BuildError> {
        let built = self.index.build()?;
        let refused: BTreeSet<String> = built.refused.into_iter().collect();
        for reason in refused.difference(&self.refused) {
            tracing::warn!(%reason, "kubernetes: object left out of the config");
        }
        self.refused = refused;
        // The same `Arc` as last time: no route changed (an update of replicas), nothing to
        // compare.
        if self
            .sent_routes
            .as_ref()
            .is_none_or(|sent| !Arc::ptr_eq(sent, &built.routes))
        {
            self.routes.send_if_modified(|routes| {
                let changed = **routes != *built.routes;
                if changed {
                    routes.clone_from(&built.routes);
                }
                changed
            });
            self.sent_routes = Some(built.routes);
        }
        Ok(built.config)
    }
}

/// Every watcher, merged.
fn events(client: Client) -> BoxStream<'static, Result<ClusterEvent, watcher::Error>> {
    // Initial lists may come from the API server's watch cache (`resourceVersion=0`) rather
    // than etcd: every replica relists on start and after each 410, and the watch that
    // follows brings the list up to date anyway.
    let config = watcher::Config::default().any_semantic();
    let services = watcher(Api::<Service>::all(client.clone()), config.clone())
        .default_backoff()
        .map(|e| e.map(|e| ClusterEvent::Service(Box::new(e))));
    let slices = watcher(Api::<EndpointSlice>::all(client.clone()), config.clone())
        .default_backoff()
        .map(|e| e.map(|e| ClusterEvent::Slice(Box::new(e))));
    let pods = watcher(Api::<Pod>::all(client.clone()), config.clone())
        .default_backoff()
        .map(|e| e.map(|e| ClusterEvent::Pod(Box::new(e))));
    let http = watcher(Api::<HttpRoute>::all(client.clone()), config.clone())
        .default_backoff()
        .map(|e| e.map(|e| ClusterEvent::HttpRoute(Box::new(e))));
    let grpc = watcher(Api::<GrpcRoute>::all(client.clone()), config.clone())
        .default_backoff()
        .map(|e| e.map(|e| ClusterEvent::GrpcRoute(Box::new(e))));
    let policies = watcher(
        Api::<AuthorizationPolicy>::all(client.clone()),
        config.clone(),
    )
    .default_backoff()
    .map(|e| e.map(|e| ClusterEvent::Policy(Box::new(e))));
    let authns = watcher(
        Api::<RequestAuthentication>::all(client.clone()),
        config.clone(),
    )
    .default_backoff()
    .map(|e| e.map(|e| ClusterEvent::Authn(Box::new(e))));
    let faults = watcher(Api::<FaultInjection>::all(client.clone()), config.clone())
        .default_backoff()
        .map(|e| e.map(|e| ClusterEvent::Fault(Box::new(e))));
    let rate_limits = watcher(Api::<LocalRateLimitPolicy>::all(client), config)
        .default_backoff()
        .map(|e| e.map(|e| ClusterEvent::RateLimit(Box::new(e))));
    futures_util::stream::select_all([
        services.boxed(),
        slices.boxed(),
        pods.boxed(),
        http.boxed(),
        grpc.boxed(),
        policies.boxed(),
        authns.boxed(),
        faults.boxed(),
        rate_limits.boxed(),
    ])
    .boxed()
}
