//! The callers the balancing scenarios compare: the mesh's channel (its balancer picks the
//! endpoint) or a plain round robin over one tonic channel per endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tonic::MeshChannel;
use tonic::Status;
use tonic::transport::Channel;

/// Plain round robin over tonic channels.
pub(crate) struct RoundRobin {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round robin over `channels`, starting at the first.
    pub(crate) fn new(channels: Vec<Channel>) -> Arc<Self> {
        Arc::new(Self {
            channels,
            next: AtomicUsize::new(0),
        })
    }
}

/// Who makes the calls.
pub(crate) enum Caller {
    /// The mesh's client.
    Mesh(MeshChannel),
    /// A plain round robin.
    RoundRobin(Arc<RoundRobin>),
}

impl Caller {
    /// One `SayHello`; the reply's message (the endpoint's name in these scenarios).
    pub(crate) async fn say_hello(&self) -> Result<String, Status> {
        let request = HelloRequest {
            name: "bench".into(),
        };
        let reply = match self {
            Self::Mesh(channel) => GreeterClient::new(channel.clone()).say_hello(request).await,
            Self::RoundRobin(rr) => {
                let i = rr.next.fetch_add(1, Ordering::Relaxed) % rr.channels.len().max(1);
                GreeterClient::new(rr.channels[i].clone())
                    .say_hello(request)
                    .await
            }
        };
        Ok(reply?.into_inner().message)
    }

    /// Another handle on the same caller (for another task).
    pub(crate) fn clone_handle(&self) -> Self {
        match self {
            Self::Mesh(c) => Self::Mesh(c.clone()),
            Self::RoundRobin(rr) => Self::RoundRobin(rr.clone()),
        }
    }
}
