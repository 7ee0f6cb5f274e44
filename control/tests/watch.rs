//! Watch over real TLS: who may subscribe, what they get, and how file edits reach them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use mesh_control::{ConfigSource, ControlOptions, RunningControl};
use mesh_core::proto::control_client::ControlClient;
use mesh_core::proto::{self, watch_request};
use mesh_core::snapshot::{ServiceName, Snapshot};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

/// Long enough for the file poller to notice and settle an edit (200 ms polls, applied once
/// two reads agree), with room for a loaded machine.
const QUIET: Duration = Duration::from_millis(1200);

async fn start_file(path: &Path) -> RunningControl {
    let options = ControlOptions::new(trust_domain(), ConfigSource::File(path.to_owned()));
    mesh_control::start(options).await.expect("control starts")
}

/// A control service over `control.yaml` (services at port 5000) in a fresh directory, and a
/// client connected with a certificate it issued.
async fn file_control_and_client() -> (tempfile::TempDir, RunningControl, ControlClient<Channel>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.yaml");
    std::fs::write(&path, config_yaml(5000)).expect("write");
    let control = start_file(&path).await;
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let client = connect(&control, Some(&cert)).await;
    (dir, control, client)
}

fn model(wire: proto::Snapshot) -> Snapshot {
    Snapshot::try_from(wire).expect("the client's own validation accepts the snapshot")
}

fn name(s: &str) -> ServiceName {
    s.parse().expect("valid service name")
}

fn addresses(snapshot: &Snapshot, service: &str) -> Vec<String> {
    snapshot
        .destination(&name(service).into())
        .expect("destination present")
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect()
}

#[tokio::test]
async fn watch_without_a_client_certificate_is_refused() {
    let control = start_inline(&config_yaml(5000)).await;
    let mut client = connect(&control, None).await;
    let status = watch_error(&mut client, subscribe("n1", &["greeter"])).await;
    assert_code(
        &status,
        Code::Unauthenticated,
        "watch requires a client certificate",
    );
    assert!(control.subscribers().is_empty());
    control.shutdown().await;
}

#[tokio::test]
async fn bad_first_messages_are_refused_with_the_field() {
    let control = start_inline(&config_yaml(5000)).await;
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;

    let status = watch_error(&mut client, ack(1, "")).await;
    assert_code(
        &status,
        Code::InvalidArgument,
        "the first message must be `subscribe`",
    );

    let mut bad = subscribe("n1", &["greeter"]);
    if let Some(proto::watch_request::Kind::Subscribe(s)) = &mut bad.kind {
        s.destinations.push(service_ref("default", "Not_A_Label"));
    }
    let status = watch_error(&mut client, bad).await;
    assert_code(&status, Code::InvalidArgument, "destinations[1]: ");
    assert!(control.subscribers().is_empty());
    control.shutdown().await;
}

#[tokio::test]
async fn subscriber_gets_its_destinations_and_acks_are_recorded() {
    let control = start_inline(&config_yaml(5001)).await;
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("pod-a", &["greeter", "missing"]))
        .await
        .expect("watch opens");

    let snapshot = model(watch.next().await);
    assert_eq!(snapshot.version, 1);
    let names: Vec<String> = snapshot
        .destinations
        .iter()
        .map(|d| d.service.to_string())
        .collect();
    assert_eq!(
        names,
        ["greeter.default", "missing.default"],
        "only what was asked, in order"
    );
    assert_eq!(addresses(&snapshot, "greeter.default"), ["127.0.0.1:5001"]);
    let greeter = snapshot
        .destination(&name("greeter.default").into())
        .expect("present");
    assert!(greeter.found);
    assert_eq!(
        greeter.endpoints[0].identity.as_str(),
        "spiffe://mesh.local/ns/default/sa/greeter"
    );
    assert!(
        !snapshot
            .destination(&name("missing.default").into())
            .expect("present")
            .found
    );

    // The registry knows the subscriber.
    assert_eventually(WAIT, "the subscriber is registered", || {
        control.subscribers().len() == 1
    })
    .await;
    let status = &control.subscribers()[0];
    assert_eq!(status.node, "pod-a");
    assert_eq!(
        status.identity.as_str(),
        "spiffe://mesh.local/ns/default/sa/client"
    );
    assert_eq!(status.own_service, Some(name("client.default")));
    // The certificate it connected with: issued just now for the default lifetime (a day).
    let expires = status.certificate_expires.expect("a certificate expiry");
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(left > Duration::from_secs(23 * 3600), "{left:?}");
    assert_eq!(
        status.destinations,
        [
            name("greeter.default").into(),
            name("missing.default").into()
        ]
    );
    assert_eq!(status.last_sent_version, 1);
    assert_eq!(status.last_acked_version, None);

    watch.send(ack(1, "")).await;
    assert_eventually(WAIT, "the ACK is recorded", || {
        control.subscribers()[0].last_acked_version == Some(1)
    })
    .await;

    // A NACK with its reason by field: kept, within bounds (32 details of 40 sent).
    let mut nack = ack(1, "destinations[0].endpoints[0].address: no");
    if let Some(watch_request::Kind::Ack(ack)) = &mut nack.kind {
        ack.details = (0..40)
            .map(|i| {
                proto::NackDetail::new(
                    &format!("destinations[0].endpoints[{i}].address"),
                    "no",
                    proto::NACK_INVALID_FIELD,
                )
            })
            .collect();
    }
    watch.send(nack).await;
    assert_eventually(WAIT, "the NACK is recorded", || {
        control.subscribers()[0].last_nack.is_some()
    })
    .await;
    let recorded = control.subscribers()[0].last_nack.clone().unwrap();
    assert_eq!(recorded.version, 1);
    assert_eq!(recorded.error, "destinations[0].endpoints[0].address: no");
    assert_eq!(recorded.details.len(), mesh_control::MAX_NACK_DETAILS);
    assert_eq!(
        recorded.details[1],
        mesh_control::NackDetail {
            field: "destinations[0].endpoints[1].address".to_owned(),
            message: "no".to_owned(),
            code: "invalid_field".to_owned(),
        }
    );

    // An ACK for a version never sent changes nothing.
    watch.send(ack(7, "")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(control.subscribers()[0].last_acked_version, Some(1));

    // A later `subscribe` replaces the destinations: a snapshot of the new set comes at once,
    // at the same config version, and the registry follows.
    watch.send(subscribe("pod-a", &["greeter"])).await;
    let snapshot = watch.next().await;
    assert_eq!(snapshot.version, 1);
    let snapshot = Snapshot::try_from(snapshot).expect("valid");
    let names: Vec<String> = snapshot
        .destinations
        .iter()
        .map(|d| d.service.to_string())
        .collect();
    assert_eq!(names, ["greeter.default"]);
    assert_eventually(WAIT, "the registry has the new destinations", || {
        control.subscribers()[0].destinations == [name("greeter.default").into()]
    })
    .await;

    // An invalid update ends the stream with the reason; the subscriber goes away with it.
    watch.send(subscribe("pod-a", &["Not_A_Name"])).await;
    let status = watch.end_status().await;
    assert_code(&status, Code::InvalidArgument, "destinations[0]");
    assert_eventually(WAIT, "the subscriber is removed", || {
        control.subscribers().is_empty()
    })
    .await;
    control.shutdown().await;
}

/// Snapshots ask for edge reports; a report, and a message of a kind this control service
/// does not know (what prost makes of a newer client's), leave the stream open.
#[tokio::test]
async fn reports_and_unknown_kinds_keep_the_stream_open() {
    let control = start_inline(&config_yaml(5002)).await;
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("pod-r", &["greeter"]))
        .await
        .expect("watch opens");
    let snapshot = watch.next().await;
    assert_eq!(
        snapshot.edge_report_interval_ms,
        u32::try_from(mesh_control::DEFAULT_EDGE_REPORT_INTERVAL.as_millis()).unwrap()
    );

    watch.send(proto::WatchRequest { kind: None }).await;
    let report = proto::EdgeReport {
        edges: vec![proto::EdgeStats {
            destination: Some(service_ref("default", "greeter")),
            calls: 3,
            failures: 1,
            latency_buckets: vec![0, 3],
        }],
    };
    watch
        .send(proto::WatchRequest {
            kind: Some(watch_request::Kind::EdgeReport(report)),
        })
        .await;
    // Messages are read in order: once the ACK after them is recorded, they were handled.
    watch.send(ack(snapshot.version, "")).await;
    assert_eventually(WAIT, "the ACK is recorded", || {
        control.subscribers()[0].last_acked_version == Some(snapshot.version)
    })
    .await;
    watch.expect_nothing(Duration::from_millis(200)).await;
    assert_eq!(control.subscribers().len(), 1);
    control.shutdown().await;
}

#[tokio::test]
async fn disconnecting_removes_the_subscriber() {
    let control = start_inline(&config_yaml(5000)).await;
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut a = open_watch(&mut client, subscribe("a", &["greeter"]))
        .await
        .expect("opens");
    let mut b = open_watch(&mut client, subscribe("b", &["other"]))
        .await
        .expect("opens");
    a.next().await;
    b.next().await;
    assert_eventually(WAIT, "two subscribers", || control.subscribers().len() == 2).await;
    drop(a);
    assert_eventually(WAIT, "one subscriber left", || {
        let list = control.subscribers();
        list.len() == 1 && list[0].node == "b"
    })
    .await;
    control.shutdown().await;
}

#[tokio::test]
async fn file_edits_reach_subscribers_and_bad_edits_do_not() {
    let (dir, control, mut client) = file_control_and_client().await;
    let path = dir.path().join("control.yaml");
    assert_eq!(control.config_version(), 1);
    let mut watch = open_watch(&mut client, subscribe("pod-a", &["greeter"]))
        .await
        .expect("opens");
    let first = model(watch.next().await);
    assert_eq!(first.version, 1);
    watch.send(ack(1, "")).await;

    // An edit of the watched service arrives as a new version, quickly.
    let started = tokio::time::Instant::now();
    std::fs::write(&path, config_yaml(5002)).expect("write");
    let second = model(watch.next().await);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(second.version, 2);
    assert_eq!(addresses(&second, "greeter.default"), ["127.0.0.1:5002"]);
    assert_eq!(control.config_version(), 2);
    watch.send(ack(2, "")).await;
    assert_eventually(WAIT, "ACK of version 2", || {
        control.subscribers()[0].last_acked_version == Some(2)
    })
    .await;

    // A bad edit: refused, the old config keeps serving, the subscriber hears nothing.
    let bad = config_yaml(5003).replace("127.0.0.1:5003", "not-an-address");
    std::fs::write(&path, bad).expect("write");
    watch.expect_nothing(QUIET).await;
    assert_eq!(control.config_version(), 2);
    std::fs::write(&path, "services: [\n").expect("write");
    watch.expect_nothing(QUIET).await;
    assert_eq!(control.config_version(), 2);
    // Bootstrap tokens of the last good config still work.
    let (_, csr) = key_and_csr();
    let mut anonymous = connect(&control, None).await;
    certify(&mut anonymous, "greeter-token-0123456789", csr)
        .await
        .expect("tokens still served");

    // A change to a service this subscriber does not watch: a new version, nothing sent.
    let unrelated = config_yaml(5002).replace("127.0.0.1:9999", "127.0.0.1:9998");
    // `version_after` answers at once for a version already superseded, and wakes for the
    // next one.
    assert_eq!(control.version_after(1).await, 2);
    let next = tokio::time::timeout(Duration::from_secs(10), control.version_after(2));
    std::fs::write(&path, unrelated).expect("write");
    assert_eq!(next.await.expect("version 3 published in time"), 3);
    watch.expect_nothing(Duration::from_millis(300)).await;

    // The file is fixed: the next good edit arrives.
    let fixed = config_yaml(5004).replace("127.0.0.1:9999", "127.0.0.1:9998");
    std::fs::write(&path, fixed).expect("write");
    let third = model(watch.next().await);
    assert_eq!(third.version, 4);
    assert_eq!(addresses(&third, "greeter.default"), ["127.0.0.1:5004"]);

    // The stream ends with UNAVAILABLE on shutdown, so the client reconnects.
    let ended = tokio::spawn(async move { watch.end_status().await });
    control.shutdown().await;
    let status = ended.await.expect("joined");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn many_subscribers_each_get_their_projection() {
    let (dir, control, mut client) = file_control_and_client().await;
    let path = dir.path().join("control.yaml");

    let mut greeters = Vec::new();
    let mut others = Vec::new();
    for i in 0..50 {
        let dest = if i % 2 == 0 { "greeter" } else { "other" };
        let mut w = open_watch(&mut client, subscribe(&format!("n{i}"), &[dest]))
            .await
            .expect("opens");
        assert_eq!(w.next().await.version, 1);
        if i % 2 == 0 {
            greeters.push(w);
        } else {
            others.push(w);
        }
    }
    assert_eventually(WAIT, "50 subscribers", || control.subscribers().len() == 50).await;

    std::fs::write(&path, config_yaml(5005)).expect("write");
    for w in &mut greeters {
        let snapshot = model(w.next().await);
        assert_eq!(snapshot.version, 2);
        assert_eq!(addresses(&snapshot, "greeter.default"), ["127.0.0.1:5005"]);
    }
    for w in &mut others {
        w.expect_nothing(Duration::from_millis(20)).await;
    }
    control.shutdown().await;
}

/// The streams of one connection run in that connection's task: Certify calls and Watch
/// streams on one connection are all served, a config change still reaches every watch while
/// the calls are in flight, and every call gets its own certificate.
#[tokio::test]
async fn certify_calls_and_watch_streams_share_a_connection() {
    let (dir, control, mut client) = file_control_and_client().await;
    let path = dir.path().join("control.yaml");
    let mut watches = Vec::new();
    for i in 0..8 {
        let mut w = open_watch(&mut client, subscribe(&format!("n{i}"), &["greeter"]))
            .await
            .expect("opens");
        assert_eq!(w.next().await.version, 1);
        watches.push(w);
    }

    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let (_, csr) = key_and_csr();
                certify(&mut client, "client-token-0123456789", csr).await
            })
        })
        .collect();
    std::fs::write(&path, config_yaml(5005)).expect("write");
    let mut leaves = std::collections::HashSet::new();
    for call in calls {
        let issued = call.await.expect("joins").expect("certified");
        assert!(
            leaves.insert(issued.chain_der[0].clone()),
            "a certificate was issued twice"
        );
    }
    assert_eq!(leaves.len(), 32);
    for w in &mut watches {
        let snapshot = model(w.next().await);
        assert_eq!(addresses(&snapshot, "greeter.default"), ["127.0.0.1:5005"]);
    }
    control.shutdown().await;
}

/// A channel to `control` with a certificate it issued, for requests the generated client
/// cannot make.
async fn certified_channel(control: &RunningControl) -> Channel {
    let cert = obtain_cert(control, "client-token-0123456789").await;
    channel_to(
        control.addr(),
        control.trust_bundle(),
        control.identity().clone(),
        Some(&cert),
    )
    .await
    .expect("connects")
}

#[tokio::test]
async fn a_watch_with_compressed_requests_is_refused_naming_the_encoding() {
    use tonic::codegen::Service as _;
    let control = start_inline(&config_yaml(5000)).await;
    let mut channel = certified_channel(&control).await;
    // The generated client cannot say `grpc-encoding` without a compression feature: by hand.
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/mesh.control.v1.Control/Watch",
            control.addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .body(tonic::body::Body::empty())
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("ready");
    let response = channel.call(request).await.expect("an answer");
    let status =
        tonic::Status::from_header_map(response.headers()).expect("a trailers-only answer");
    assert_code(
        &status,
        Code::Unimplemented,
        "Content is compressed with `gzip`",
    );
    assert_eq!(response.headers()["grpc-accept-encoding"], "identity");
}

/// A control file whose `greeter` has `endpoints` endpoints, the first on `first_port`.
fn big_greeter_yaml(endpoints: u16, first_port: u16) -> String {
    let mut yaml = config_yaml(first_port);
    let extra: String = (1..endpoints)
        .map(|i| {
            format!(
                "      - address: 127.0.1.{}:{}\n        identity: spiffe://mesh.local/ns/default/sa/greeter\n",
                i % 250 + 1,
                6000 + i
            )
        })
        .collect();
    let at = yaml.find("  - name: other").expect("the other service");
    yaml.insert_str(at, &extra);
    yaml
}

#[tokio::test]
async fn a_large_snapshot_and_its_increment_arrive_whole_over_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.yaml");
    std::fs::write(&path, big_greeter_yaml(200, 5000)).expect("write");
    let control = start_file(&path).await;
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut first = subscribe("increments", &["greeter"]);
    if let Some(watch_request::Kind::Subscribe(s)) = &mut first.kind {
        s.incremental = true;
    }
    let mut watch = open_watch(&mut client, first).await.expect("opens");
    let mut held = watch.next().await;
    // Well over the size sent as one chunk: the shared bytes go out uncopied, after the prefix.
    assert!(
        prost::Message::encoded_len(&held) > 4096,
        "a large snapshot"
    );
    assert_eq!(
        addresses(&model(held.clone()), "greeter.default").len(),
        200
    );
    watch.send(ack(held.version, "")).await;

    // One endpoint moves: an increment over the version held, with its own base version.
    std::fs::write(&path, big_greeter_yaml(200, 5001)).expect("write");
    let increment = watch.next().await;
    assert_eq!(increment.base_version, held.version, "{increment:?}");
    assert!(
        prost::Message::encoded_len(&increment) < 1024,
        "only the change"
    );
    mesh_core::delta::apply(&mut held, increment).expect("applies");

    // The same as a full snapshot sent afresh.
    let mut fresh = open_watch(&mut client, subscribe("full", &["greeter"]))
        .await
        .expect("opens");
    let full = fresh.next().await;
    assert_eq!(full.version, held.version);
    assert_eq!(model(held), model(full.clone()));
    assert!(addresses(&model(full), "greeter.default").contains(&"127.0.0.1:5001".to_owned()));
}

/// `WatchRequest` with `subscribe` (a message) sent as a number: the wrong wire type.
#[derive(Clone, PartialEq, prost::Message)]
struct MistypedWatchRequest {
    #[prost(uint64, tag = "1")]
    subscribe: u64,
}

#[tokio::test]
async fn an_undecodable_watch_request_is_invalid_argument_naming_the_field() {
    let control = start_inline(&config_yaml(5000)).await;
    let channel = certified_channel(&control).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let requests = tokio_stream::iter([MistypedWatchRequest { subscribe: 7 }]);
    let result = grpc
        .streaming(
            tonic::Request::new(requests),
            tonic::codegen::http::uri::PathAndQuery::from_static("/mesh.control.v1.Control/Watch"),
            tonic_prost::ProstCodec::<MistypedWatchRequest, proto::Snapshot>::default(),
        )
        .await;
    let status = match result {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("the stream ends with the refusal"),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("WatchRequest"),
        "names the message and field: {status:?}"
    );
}
