//! [`Shared`]: the state every call of one [`super::MeshClient`] reads (its destination, routing,
//! retry budget), owned by the client and by the calls in flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use mesh_core::budget::RetryBudget;
use mesh_core::snapshot::ServiceName;
use tokio::task::AbortHandle;

use super::body::MeshBody;
use super::router::Router;

/// What every call of one [`super::MeshClient`] shares.
pub(crate) struct Shared<B> {
    pub(crate) destination: ServiceName,
    pub(crate) authority: Authority,
    pub(crate) router: Arc<Router<MeshBody<B>>>,
    pub(crate) budget: Mutex<RetryBudget>,
    pub(crate) ready_timeout: Duration,
    pub(crate) follower: AbortHandle,
}

impl<B> Drop for Shared<B> {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
