//! Control files that would blow up the control service or its clients: a small file whose
//! YAML aliases expand to gigabytes, and a config with a destination larger than a client
//! accepts in a snapshot. Each is refused, and the last good config keeps serving.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use mesh_control::{ConfigSource, ControlOptions, ParseError};
use support::*;

/// Long enough for the file poller to notice and settle an edit (200 ms polls, applied once
/// two reads agree), with room for a loaded machine.
const QUIET: Duration = Duration::from_millis(1200);

const MB: u64 = 1024 * 1024;

use mesh_core::testing::hostile::{self, rss_bytes as rss};

/// The good config plus a service `big` with `count` endpoints whose label `app` is `value`
/// (written once with an anchor, then through aliases when `alias` is set) and `extra` more
/// labels of 63 bytes.
fn with_big(count: usize, value: &str, alias: bool, extra: usize) -> String {
    let good = config_yaml(5000);
    let (services, tokens) = good.split_at(good.find("bootstrapTokens:").unwrap());
    let mut text = services.to_owned();
    text.push_str("  - name: big\n    namespace: default\n    endpoints:\n");
    for i in 0..count {
        let app = match (alias, i) {
            (true, 0) => format!("&v \"{value}\""),
            (true, _) => "*v".to_owned(),
            (false, _) => format!("\"{value}\""),
        };
        let mut labels = format!("app: {app}");
        for l in 0..extra {
            write!(labels, ", l{l}: {}", "x".repeat(63)).unwrap();
        }
        writeln!(
            text,
            "      - {{address: \"10.1.{}.{}:80\", identity: spiffe://mesh.local/ns/default/sa/big, labels: {{{labels}}}}}",
            i / 250,
            i % 250 + 1
        )
        .unwrap();
    }
    text.push_str(tokens);
    text
}

/// `text` is refused with an error starting `starts`.
fn assert_refused(text: &str, starts: &str) {
    match mesh_control::file::parse(text, &trust_domain()) {
        Err(ParseError::Invalid(errors)) => {
            assert!(errors.0[0].to_string().starts_with(starts), "{errors}");
        }
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_configs_are_refused_and_the_last_good_one_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control.yaml");
    std::fs::write(&path, config_yaml(5000)).expect("write");
    let options = ControlOptions::new(trust_domain(), ConfigSource::File(path.clone()));
    let control = mesh_control::start(options).await.expect("control starts");
    let cert = obtain_cert(&control, "client-token-0123456789").await;
    let mut client = connect(&control, Some(&cert)).await;
    let mut watch = open_watch(&mut client, subscribe("n", &["greeter"]))
        .await
        .expect("opens");
    assert_eq!(watch.next().await.version, 1);
    // Why each is refused, checked here first (memory is measured from after these).
    let big = with_big(4_000, "app", false, 12);
    assert_refused(&big, "services[3]: destination big.default takes ");
    let long = with_big(1, &"a".repeat(64), false, 0);
    assert_refused(
        &long,
        "services[3].endpoints[0].labels.app: longer than 63 bytes",
    );
    let before = rss();

    // The reported file: a label value repeated through 2,000 aliases (about 100 MB
    // expanded from a file of about 200 KB).
    let bomb = with_big(2_001, &"a".repeat(50_000), true, 0);
    assert!(bomb.len() < 300_000, "{} bytes", bomb.len());
    let refused = mesh_control::file::parse(&bomb, &trust_domain());
    assert!(
        matches!(refused, Err(ParseError::TooLarge { .. })),
        "{refused:?}"
    );
    std::fs::write(&path, &bomb).expect("write");
    watch.expect_nothing(QUIET).await;
    let after_bomb = rss();

    // 4,000 endpoints with 12 labels of 63 bytes: one destination over 3 MiB.
    std::fs::write(&path, big).expect("write");
    watch.expect_nothing(QUIET).await;
    // A label value over 63 bytes, written out.
    std::fs::write(&path, long).expect("write");
    watch.expect_nothing(QUIET).await;
    let after = rss();

    // The last good config still serves, and a good edit still applies.
    std::fs::write(&path, config_yaml(5005)).expect("write");
    // Generous: the poller may still be busy measuring the oversized config (a debug build
    // on a loaded machine).
    let snapshot = tokio::time::timeout(Duration::from_secs(30), watch.rx.message())
        .await
        .expect("a snapshot within 30 s")
        .expect("the stream is healthy")
        .expect("a snapshot");
    assert_eq!(snapshot.version, 2);
    assert_eq!(
        snapshot.destinations[0].endpoints[0].address,
        "127.0.0.1:5005"
    );
    eprintln!(
        "RSS before {} MB, after the alias file {} MB, after the oversized configs {} MB",
        before / MB,
        after_bomb / MB,
        after / MB
    );
    hostile::report(
        "control file: 2,000 YAML aliases of a 50 KB label, a 4,000-endpoint destination, a 64-byte label",
        "a subscriber, which gets the next good version",
        0,
        before,
        after_bomb.max(after),
        after,
    );
    // The alias file is refused before it is expanded (it took 1.1 GB); the oversized
    // destination is built once to be measured (some tens of MB, then freed: its second
    // parse here reuses what the first one, above, freed).
    assert!(after_bomb < before + 16 * MB, "{} MB", after_bomb / MB);
    assert!(after < before + 64 * MB, "{} MB", after / MB);
    control.shutdown().await;
}
