//! The servers of the `fan-out` scenario, each run in a process of its own (hidden
//! subcommands of the bench binary) so that their CPU time and memory can be read from
//! `/proc`: the real control service, and the baseline, a plain tonic server-streaming service
//! over cleartext HTTP/2 or over rustls mTLS.
//!
//! Both pin themselves to core 0 (the subscribers run on core 1), raise their open-file limit
//! and report on stdout: `ready ...` once serving, and the control service `published V T`
//! whenever a new config version is in force (`T` in Unix nanoseconds).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::Stream;
use mesh_control::{ConfigSource, ControlOptions};
use mesh_core::TrustDomain;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::plain_tls::{self, Material, PlainTls};
use crate::procs;

/// The baseline's protocol (`examples/bench/proto/fanout.proto`).
pub(crate) mod proto {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("bench.fanout");
}

use proto::fanout_server::{Fanout, FanoutServer};
use proto::{PublishReply, SubscribeRequest, Update};

/// `bench __control CONFIG [POLL_MS]`: the control service over the control file `CONFIG`
/// (polled every `POLL_MS`, by default the control service's own interval), writing its trust
/// bundle beside it (`trust-bundle.pem`).
pub(crate) fn control_main(args: &[String]) -> anyhow::Result<()> {
    let config = PathBuf::from(args.first().context("usage: __control CONFIG [POLL_MS]")?);
    let poll = args
        .get(1)
        .map(|ms| ms.parse().map(std::time::Duration::from_millis))
        .transpose()
        .context("POLL_MS: a number of milliseconds")?;
    procs::raise_fd_limit();
    procs::pin_to_core(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut options = ControlOptions::new(
            TrustDomain::new("mesh.local")?,
            ConfigSource::File(config.clone()),
        );
        options.trust_bundle_out = Some(config.with_file_name("trust-bundle.pem"));
        if let Some(poll) = poll {
            options.file_poll_interval = poll;
        }
        // Every subscriber of the benchmark comes from 127.0.0.1: the per-address handshake
        // budget (made for many addresses) would refuse the benchmark's concurrent connects,
        // and 10,000 subscribers plus the Certify call exceed the default connection cap.
        options.connection_limits.max_handshakes_per_ip = options.connection_limits.max_handshakes;
        options.connection_limits.max_connections = 20_000;
        // Every subscriber also shares one identity, which the per-identity Watch limits
        // (made for one workload's replicas) would cap far below the bench's 10,000.
        options.watch_limits.max_streams_per_identity = 20_000;
        options.watch_limits.max_destinations_per_identity = 20_000;
        let control = mesh_control::start(options).await?;
        println!("ready {} {}", control.addr(), control.identity());
        let mut version = control.config_version();
        loop {
            // Woken when a version is published: a polling loop here would wake the process
            // (and take its core from the server) a thousand times a second.
            version = control.version_after(version).await;
            println!("published {version} {}", procs::unix_nanos());
        }
    })
}

/// `bench __stream [TLS_DIR]`: the baseline streaming server, on cleartext HTTP/2, or over
/// rustls mTLS with the material [`plain_tls::Material::write`] wrote to `TLS_DIR`.
pub(crate) fn stream_main(args: &[String]) -> anyhow::Result<()> {
    let tls = args
        .first()
        .map(|dir| PlainTls::from_material(Material::read(dir.as_ref())?))
        .transpose()?;
    procs::raise_fd_limit();
    procs::pin_to_core(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("ready {}", listener.local_addr()?);
        let (tx, _) = watch::channel(Arc::new(Update {
            version: 1,
            payload: Vec::new(),
        }));
        let server =
            tonic::transport::Server::builder().add_service(FanoutServer::new(Broadcaster { tx }));
        match tls {
            Some(tls) => {
                server
                    .serve_with_incoming(plain_tls::incoming(listener, tls.server))
                    .await?;
            }
            None => {
                server
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await?;
            }
        }
        Ok(())
    })
}

/// Streams the latest update to every subscriber, as a plain tonic service would.
struct Broadcaster {
    tx: watch::Sender<Arc<Update>>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<Update, Status>> + Send>>;

#[tonic::async_trait]
impl Fanout for Broadcaster {
    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let rx = self.tx.subscribe();
        // The current update at once, then each new one.
        let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first {
                rx.changed().await.ok()?;
            }
            let update = Update::clone(&rx.borrow_and_update());
            Some((Ok(update), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn publish(&self, request: Request<Update>) -> Result<Response<PublishReply>, Status> {
        let sent_unix_nanos = procs::unix_nanos();
        self.tx.send_replace(Arc::new(request.into_inner()));
        Ok(Response::new(PublishReply { sent_unix_nanos }))
    }
}
