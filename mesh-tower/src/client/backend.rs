//! A backend: one service's endpoints, balanced by power of two choices over peak-EWMA
//! ([`super::balance`]), preferring the caller's zone, waiting for one to be ready, and
//! failure accrual (outlier ejection).
//!
//! Zones: the endpoint set is kept with the endpoints local to the caller first
//! ([`mesh_core::locality`] says which are local and what share of calls stays local). A call
//! picks among the local ones with that share, else among the others; when the side it drew
//! has no endpoint available it takes the other side rather than wait.
//!
//! The mesh balances with its own P2C rather than tower's balancer so that a retry can avoid
//! the endpoint that just failed, endpoint weights scale the cost, ejection takes an endpoint
//! out without a reconnect, and a call goes straight to a connection instead of through a
//! buffer task. Picking reads an `ArcSwap` and atomics only; the one lock is the outlier
//! detector's, taken once per response to record its outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use mesh_core::hedge::{DEFAULT_PERIOD, WindowedLatency};
use mesh_core::locality;
use mesh_core::outlier::OutlierDetector;
use mesh_core::snapshot::{self, ServiceName};
use tokio::sync::Notify;

use metrics::{Counter, Gauge, Label};

use super::ClientOptions;
use super::balance::p2c;
use super::endpoint::{Endpoint, EndpointKey};
use crate::error::BoxError;
use crate::identity::Identity;
use crate::telemetry::{EJECTIONS, ENDPOINTS, Refresh, attr};
use crate::tls::client_config;

/// How often a waiting call looks again for an endpoint (ejections end without a signal).
const RECHECK: Duration = Duration::from_millis(50);

/// The endpoints of one backend at one moment, with their outlier state (same indexes).
struct EndpointSet<B> {
    /// The endpoints local to the caller's zone first, then the others.
    endpoints: Vec<Arc<Endpoint<B>>>,
    /// How many of `endpoints` are local; 0 when the caller has no zone or none is local.
    local: usize,
    /// The caller's zone the set was ordered for.
    zone: Arc<str>,
    outliers: Mutex<OutlierDetector>,
}

/// One backend service.
pub(crate) struct Backend<B> {
    pub(crate) service: ServiceName,
    set: ArcSwap<EndpointSet<B>>,
    ready: Arc<Notify>,
    epoch: Instant,
    options: ClientOptions,
    metrics: BackendMetrics,
    /// Recent latencies to response headers, for hedging delays at a percentile (recorded
    /// only by calls on such a route; see [`super::hedge`]).
    pub(crate) latency: Mutex<WindowedLatency>,
}

/// A backend's metric handles, made once with the backend.
struct BackendMetrics {
    ejections: Counter,
    available: Gauge,
    ejected: Gauge,
    connecting: Gauge,
}

impl BackendMetrics {
    fn new(own_service: &str, backend: &ServiceName) -> Self {
        let labels = vec![
            Label::new(attr::MESH_SERVICE, own_service.to_owned()),
            Label::new(attr::MESH_BACKEND, backend.to_string()),
        ];
        let state = |state: &'static str| {
            let mut l = labels.clone();
            l.push(Label::from_static_parts(attr::MESH_STATE, state));
            metrics::gauge!(ENDPOINTS, l)
        };
        let (available, ejected, connecting) =
            (state("available"), state("ejected"), state("connecting"));
        let ejections = metrics::counter!(EJECTIONS, labels);
        // At 0 from the start: a rate over it is 0, not absent.
        ejections.increment(0);
        Self {
            available,
            ejected,
            connecting,
            ejections,
        }
    }
}

impl<B> std::fmt::Debug for Backend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("service", &self.service)
            .field("endpoints", &self.set.load().endpoints.len())
            .finish()
    }
}

/// Why a backend could not take a call.
#[derive(Debug)]
pub(crate) enum SendError<B> {
    /// The backend has no endpoints at all.
    NoEndpoints,
    /// None became available within the wait.
    NoReadyEndpoint(Duration),
    /// The connection failed during the call.
    Endpoint(Arc<Endpoint<B>>, hyper::Error),
    /// The connection closed before the request was written: hyper gave it back whole, never
    /// sent, so it may go elsewhere as it is (whatever its body). Boxed: a rare path should
    /// not make every send's result larger.
    Unsent(Arc<Endpoint<B>>, hyper::Error, Box<Request<B>>),
}

/// An endpoint picked for a try, and a connection of it ready to take the request.
pub(crate) type Ready<B> = (Arc<Endpoint<B>>, SendRequest<B>);

/// What [`Backend::send`] gives: the response and the endpoint that answered, or why not.
pub(crate) type Sent<B> = Result<(Response<Incoming>, Arc<Endpoint<B>>), SendError<B>>;

impl<B> Backend<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        service: ServiceName,
        epoch: Instant,
        options: ClientOptions,
        own_service: &str,
    ) -> Self {
        Self {
            metrics: BackendMetrics::new(own_service, &service),
            service,
            set: ArcSwap::from_pointee(EndpointSet {
                endpoints: Vec::new(),
                local: 0,
                zone: Arc::from(""),
                outliers: Mutex::new(OutlierDetector::new(options.outliers, 0)),
            }),
            ready: Arc::new(Notify::new()),
            latency: Mutex::new(WindowedLatency::new(DEFAULT_PERIOD, epoch)),
            epoch,
            options,
        }
    }

    /// Puts `wanted` in force for a caller in `zone` (empty: none): endpoints already known
    /// keep their connection and load, new ones start connecting, removed ones are dropped
    /// (closing their connection).
    pub(crate) fn update(
        &self,
        wanted: &[snapshot::Endpoint],
        identity: &Identity,
        zone: &Arc<str>,
    ) {
        let current = self.set.load();
        // The local endpoints first, each side in the snapshot's order.
        let hinted = wanted.iter().any(|e| !e.for_zones.is_empty());
        let is_local =
            |e: &snapshot::Endpoint| locality::is_local(zone, &e.zone, &e.for_zones, hinted);
        let local = wanted.iter().filter(|e| is_local(e)).count();
        let ordered = wanted
            .iter()
            .filter(|e| is_local(e))
            .chain(wanted.iter().filter(|e| !is_local(e)));
        let mut known: HashMap<&EndpointKey, (usize, &Arc<Endpoint<B>>)> = current
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (&e.key, (i, e)))
            .collect();
        let mut endpoints = Vec::with_capacity(wanted.len());
        // For each endpoint of the new set, its index in the current one when it stays.
        let mut previous = Vec::with_capacity(wanted.len());
        let mut changed = wanted.len() != current.endpoints.len()
            || local != current.local
            || *zone != current.zone;
        for (i, spec) in ordered.enumerate() {
            let key = EndpointKey {
                addr: spec.address,
                identity: spec.identity.clone(),
            };
            let endpoint = match known.remove(&key) {
                Some((index, endpoint)) => {
                    previous.push(Some(index));
                    endpoint.set_weight(spec.weight);
                    changed |= !current
                        .endpoints
                        .get(i)
                        .is_some_and(|e| Arc::ptr_eq(e, endpoint));
                    endpoint.clone()
                }
                None => {
                    changed = true;
                    previous.push(None);
                    tracing::debug!(backend = %self.service, endpoint = %key.addr, "endpoint added");
                    let tls = client_config(identity.trust(), key.identity.clone(), Some(identity));
                    Endpoint::spawn(
                        key,
                        spec.weight,
                        self.options.connections_per_endpoint,
                        tls,
                        self.ready.clone(),
                        self.epoch,
                    )
                }
            };
            endpoints.push(endpoint);
        }
        if !changed {
            return;
        }
        for gone in known.keys() {
            tracing::debug!(backend = %self.service, endpoint = %gone.addr, "endpoint removed");
        }
        // Endpoints that stay keep their failure counts, ejection and back-off.
        let outliers = Mutex::new(
            current
                .outliers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .carried(&previous),
        );
        self.set.store(Arc::new(EndpointSet {
            endpoints,
            // All local or none: one set, no preference to apply.
            local: if local == wanted.len() { 0 } else { local },
            zone: zone.clone(),
            outliers,
        }));
    }

    /// Sends `request` to an endpoint picked by P2C, avoiding `avoid` when another is available,
    /// waiting up to `ready_timeout` for one to become available.
    /// The endpoint picked is put in `chosen` (when given) as soon as it is known, so that a
    /// caller whose own timer drops this future still knows where the try went; a caller with
    /// no timer passes `None` and pays no reference count for it.
    pub(crate) fn send<'a>(
        &'a self,
        request: Request<B>,
        avoid: &'a [EndpointKey],
        ready_timeout: Duration,
        chosen: Option<&'a mut Option<Arc<Endpoint<B>>>>,
    ) -> impl Future<Output = Sent<B>> + Send + 'a {
        // The usual case first: an endpoint is ready, so no waiter is registered (registering
        // one takes the `Notify`'s lock twice, shared by every call on this backend), and the
        // try's future is hyper's send and no more. Picked now, when the try is made: its
        // caller awaits it at once.
        // One reading of the clock for the pick and the try's start (about 50 instructions
        // each); a try that had to wait reads it again.
        let now = Instant::now();
        match self.ready_endpoint_at(avoid, now) {
            Some((endpoint, sender)) => {
                if let Some(chosen) = chosen {
                    *chosen = Some(endpoint.clone());
                }
                Either::Left(Self::send_at(endpoint, sender, request, now))
            }
            // Boxed: waiting for a ready endpoint is rare, and its state (a waiter, a timer
            // and the request) would otherwise size every try's.
            None => Either::Right(Box::pin(async move {
                let (endpoint, sender) = self.wait_for_ready(avoid, ready_timeout).await?;
                if let Some(chosen) = chosen {
                    *chosen = Some(endpoint.clone());
                }
                Self::send_at(endpoint, sender, request, Instant::now()).await
            })),
        }
    }

    /// Waits up to `ready_timeout` for an endpoint (other than `avoid`, when another is
    /// available) with a connection ready to take a request.
    async fn wait_for_ready(
        &self,
        avoid: &[EndpointKey],
        ready_timeout: Duration,
    ) -> Result<Ready<B>, SendError<B>> {
        let deadline = tokio::time::Instant::now() + ready_timeout;
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            // Registered before checking again, so a wakeup between the two is not lost.
            notified.as_mut().enable();
            if let Some(ready) = self.ready_endpoint(avoid) {
                return Ok(ready);
            }
            if self.set.load().endpoints.is_empty() {
                return Err(SendError::NoEndpoints);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(SendError::NoReadyEndpoint(ready_timeout));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.min(now + RECHECK)) => {}
            }
        }
    }

    /// An endpoint picked by P2C with a connection ready to take a request.
    pub(crate) fn ready_endpoint(&self, avoid: &[EndpointKey]) -> Option<Ready<B>> {
        self.ready_endpoint_at(avoid, Instant::now())
    }

    /// [`Backend::ready_endpoint`] with the time already read.
    fn ready_endpoint_at(&self, avoid: &[EndpointKey], now: Instant) -> Option<Ready<B>> {
        let endpoint = self.pick(avoid, now)?;
        let sender = endpoint.sender()?;
        Some((endpoint, sender))
    }

    /// An endpoint other than those in `avoid` with a connection ready to take a request now,
    /// picked by P2C; none when only avoided endpoints are ready (a hedge goes elsewhere or
    /// not at all).
    pub(crate) fn ready_other(&self, avoid: &[EndpointKey]) -> Option<Ready<B>> {
        self.ready_endpoint(avoid)
            .filter(|(endpoint, _)| !avoid.contains(&endpoint.key))
    }

    /// An endpoint picked by P2C (avoiding `avoid` when another is available) with a
    /// connection ready to take a request, waiting up to `ready_timeout` for one.
    pub(crate) async fn ready(
        &self,
        avoid: &[EndpointKey],
        ready_timeout: Duration,
    ) -> Result<Ready<B>, SendError<B>> {
        match self.ready_endpoint(avoid) {
            Some(ready) => Ok(ready),
            None => self.wait_for_ready(avoid, ready_timeout).await,
        }
    }

    /// Sends `request` on `sender`, a connection of `endpoint`, counting it in flight.
    pub(crate) fn send_to(
        endpoint: Arc<Endpoint<B>>,
        sender: SendRequest<B>,
        request: Request<B>,
    ) -> impl Future<Output = Sent<B>> {
        Self::send_at(endpoint, sender, request, Instant::now())
    }

    /// [`Backend::send_to`] for a try that starts at `sent`.
    fn send_at(
        endpoint: Arc<Endpoint<B>>,
        mut sender: SendRequest<B>,
        request: Request<B>,
        sent: Instant,
    ) -> impl Future<Output = Sent<B>> + use<B> {
        let in_flight = InFlight::start(endpoint, sent);
        // `try_send_request` rather than `send_request`: when the connection closes before the
        // request is written, hyper hands the request back. A combinator rather than an
        // `async fn`: that kept the request in its state beside hyper's future holding it.
        sender.try_send_request(request).map(move |result| {
            let endpoint = in_flight.end();
            match result {
                Ok(response) => Ok((response, endpoint)),
                Err(mut error) => match error.take_message() {
                    Some(request) => Err(SendError::Unsent(
                        endpoint,
                        error.into_error(),
                        Box::new(request),
                    )),
                    None => Err(SendError::Endpoint(endpoint, error.into_error())),
                },
            }
        })
    }

    /// An endpoint picked by P2C (see [`super::balance`]) among the available ones, in the
    /// caller's zone for the share of calls that stays local; the endpoints in `avoid` only
    /// when no other is available on either side.
    fn pick(&self, avoid: &[EndpointKey], now: Instant) -> Option<Arc<Endpoint<B>>> {
        let set = self.set.load();
        let random = &mut |n| fastrand::usize(..n);
        if set.local == 0 {
            return p2c(&set.endpoints, avoid, now, random).cloned();
        }
        let (local, remote) = set.endpoints.split_at(set.local);
        let healthy = local.iter().filter(|e| e.is_healthy(now)).count();
        let share = locality::local_share(healthy, local.len());
        let (first, second) = if locality::stays_local(share, fastrand::f64()) {
            (local, remote)
        } else {
            (remote, local)
        };
        // An endpoint not to avoid on either side before an avoided one on this side.
        let fresh = |e: &&Arc<Endpoint<B>>| !avoid.contains(&e.key);
        if let Some(endpoint) = p2c(first, avoid, now, random).filter(fresh) {
            return Some(endpoint.clone());
        }
        if let Some(endpoint) = p2c(second, avoid, now, random).filter(fresh) {
            return Some(endpoint.clone());
        }
        p2c(first, &[], now, random)
            .or_else(|| p2c(second, &[], now, random))
            .cloned()
    }

    /// Records a call's outcome for outlier ejection.
    pub(crate) fn record(&self, endpoint: &Arc<Endpoint<B>>, success: bool) {
        let set = self.set.load();
        let Some(index) = set.endpoints.iter().position(|e| Arc::ptr_eq(e, endpoint)) else {
            // Removed meanwhile: nothing to judge.
            return;
        };
        let now = Instant::now();
        let ejection = match set.outliers.lock() {
            Ok(mut outliers) => outliers.record(index, success, now),
            // A panic while holding the lock left the detector as it was: keep using it.
            Err(poisoned) => poisoned.into_inner().record(index, success, now),
        };
        if let Some(ejection) = ejection {
            tracing::warn!(
                backend = %self.service,
                endpoint = %endpoint.key.addr,
                seconds = ejection.duration.as_secs(),
                ejections = ejection.count,
                "endpoint ejected after repeated failures"
            );
            endpoint.eject_until(now + ejection.duration);
            self.metrics.ejections.increment(1);
        }
    }

    /// The endpoints, for diagnostics and tests.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.set.load().endpoints.len()
    }
}

impl<B: Send + 'static> Refresh for Backend<B> {
    /// Counts the endpoints by state for the `mesh.client.endpoints` gauge.
    fn refresh(&self, now: Instant) {
        let set = self.set.load();
        let (mut available, mut ejected, mut connecting) = (0u32, 0u32, 0u32);
        for endpoint in &set.endpoints {
            if endpoint.is_ejected(now) {
                ejected += 1;
            } else if endpoint.is_available(now) {
                available += 1;
            } else {
                connecting += 1;
            }
        }
        self.metrics.available.set(available);
        self.metrics.ejected.set(ejected);
        self.metrics.connecting.set(connecting);
    }

    /// The backend as `/debug/endpoints` shows it: each endpoint's weight, load and state.
    fn debug_view(&self, now: Instant) -> serde_json::Value {
        let set = self.set.load();
        let endpoints: Vec<serde_json::Value> = set
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let state = if endpoint.is_ejected(now) {
                    "ejected"
                } else if endpoint.is_available(now) {
                    "available"
                } else {
                    "connecting"
                };
                serde_json::json!({
                    "address": endpoint.key.addr.to_string(),
                    "identity": endpoint.key.identity.as_str(),
                    "weight": endpoint.weight(),
                    "state": state,
                    "peakEwmaMs": endpoint.load.estimate(now).as_secs_f64() * 1e3,
                    "inFlight": endpoint.load.in_flight(),
                    "ejectedForSeconds": endpoint.ejected_for(now).map(|d| d.as_secs_f64()),
                    "local": i < set.local,
                })
            })
            .collect();
        serde_json::json!({
            "backend": self.service.to_string(),
            "zone": &*set.zone,
            "endpoints": endpoints,
        })
    }
}

/// A call in flight on an endpoint: counted in its load until it ends, or until dropped (when
/// the call is cancelled by a timeout).
struct InFlight<B> {
    /// `None` once ended.
    endpoint: Option<Arc<Endpoint<B>>>,
    sent: Instant,
}

impl<B> InFlight<B> {
    fn start(endpoint: Arc<Endpoint<B>>, sent: Instant) -> Self {
        endpoint.load.start();
        Self {
            endpoint: Some(endpoint),
            sent,
        }
    }

    /// Ends the call's count now; the endpoint back.
    fn end(mut self) -> Arc<Endpoint<B>> {
        let Some(endpoint) = self.endpoint.take() else {
            // Set by `start` and taken only here, which consumes the guard.
            unreachable!("a call in flight ends once")
        };
        endpoint.load.complete(self.sent, Instant::now());
        endpoint
    }
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.load.complete(self.sent, Instant::now());
        }
    }
}
