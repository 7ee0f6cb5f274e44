//! A real Prometheus scrapes the workloads' and the control service's admin ports, and the
//! PromQL a user writes over the OpenTelemetry names answers: the p99 of
//! `rpc.server.call.duration` per service and the error rate per service.
//!
//! Prometheus is Debian's `prometheus` package (`/usr/bin/prometheus`, or `PROMETHEUS`). When
//! it is missing the test says so and checks only that the scrape text has the new names,
//! unless `MESH_REQUIRE_TOOLS=1` (CI), which makes a missing binary a failure.
//!
//! Alone in its file on purpose: the `metrics` recorder is process-global, and a test binary
//! is one process. For the same reason every admin port of this process renders the same
//! series; each target is its own job and the queries read one job's.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::greeter::{GreeterMode, TestGreeter};
use mesh_tests::telemetry::{admin_get, find, parse, sum};
use mesh_tests::{Config, Harness, listener, serve_greeter};
use mesh_tonic::MeshTonicExt;
use mesh_tower::Mesh;
use serde_json::Value;

fn prometheus_binary() -> Option<PathBuf> {
    let path = PathBuf::from(
        std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".to_owned()),
    );
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("MESH_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "MESH_REQUIRE_TOOLS=1 and no Prometheus at {} (apt-get install prometheus)",
        path.display()
    );
    None
}

/// A free loopback port, for a server that binds it itself.
fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// `text` with everything but unreserved characters percent-encoded, for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A PromQL instant query: the result vector as (labels, value).
async fn query(prometheus: SocketAddr, promql: &str) -> Vec<(Value, f64)> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let Ok((status, body)) = admin_get(prometheus, &path).await else {
        return Vec::new();
    };
    assert_eq!(status, 200, "{promql}: {body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["status"], "success", "{body}");
    reply["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// The value per `mesh_service` in a query's result (NaN results left out).
fn by_service(result: &[(Value, f64)]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = result
        .iter()
        .filter(|(_, v)| !v.is_nan())
        .map(|(m, v)| (m["mesh_service"].as_str().unwrap_or("").to_owned(), *v))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

struct Prometheus {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(binary: &PathBuf, jobs: &[(&str, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, addr) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs: [{{targets: [\"{addr}\"]}}]\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = free_port();
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Polls `promql` until `done` accepts its result (or 40 s pass: then the last result).
async fn until(
    prometheus: SocketAddr,
    promql: &str,
    done: impl Fn(&[(Value, f64)]) -> bool,
) -> Vec<(Value, f64)> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let result = query(prometheus, promql).await;
        if done(&result) || Instant::now() > deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_mesh_and_answers_promql() {
    let started = Instant::now();
    let greeter_listener = listener().await.unwrap();
    let hello_listener = listener().await.unwrap();
    let config = Config::new()
        .service(
            "greeter",
            &[(greeter_listener.local_addr().unwrap(), "greeter")],
        )
        .service("hello", &[(hello_listener.local_addr().unwrap(), "hello")])
        .account("greeter")
        .account("hello")
        .account("client");
    // The control service installs the process's recorder before any mesh makes handles.
    let harness = Harness::start_with(&config, |o| {
        o.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let control_admin = harness.control.as_ref().unwrap().admin_addr().unwrap();

    let mut admins = Vec::new();
    let mut servers = Vec::new();
    for (service, listener) in [("greeter", greeter_listener), ("hello", hello_listener)] {
        let settings = harness
            .settings(service, Some(service))
            .with_admin_addr("127.0.0.1:0".parse().unwrap());
        let mesh = Mesh::start(settings).await.unwrap();
        admins.push((service, mesh.admin_addr().unwrap()));
        let greeter = TestGreeter::new(service, GreeterMode::Normal);
        servers.push(serve_greeter(mesh, listener, greeter).unwrap());
    }
    let client_mesh = Mesh::start(
        harness
            .settings("client", None)
            .with_admin_addr("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let client_admin = client_mesh.admin_addr().unwrap();
    let mut greeter = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    let mut hello = GreeterClient::new(client_mesh.channel("hello").await.unwrap());

    // Traffic for the whole test: one call in five to greeter fails (INTERNAL, an error on
    // both sides); hello always answers.
    let traffic = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0u32;
        while Instant::now() < deadline {
            let name = if n.is_multiple_of(5) {
                "internal"
            } else {
                "ann"
            };
            let _ = greeter.say_hello(HelloRequest { name: name.into() }).await;
            let _ = hello.say_hello(HelloRequest { name: "bob".into() }).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The scrape text itself, with the conventions' names and the mesh's labels.
    let (status, text) = admin_get(client_admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let m = parse(&text);
    for service in ["greeter.default", "hello.default"] {
        assert!(
            !find(
                &m,
                "rpc_server_call_duration_seconds_bucket",
                &[
                    ("mesh_service", service),
                    ("rpc_system_name", "grpc"),
                    ("rpc_method", "helloworld.Greeter/SayHello"),
                    ("rpc_status_code", "OK"),
                    ("le", "0.005"),
                ],
            )
            .is_empty(),
            "{service}: {text}"
        );
    }
    assert!(
        sum(
            &m,
            "rpc_server_call_duration_seconds_count",
            &[
                ("mesh_service", "greeter.default"),
                ("rpc_status_code", "INTERNAL"),
                ("error_type", "INTERNAL"),
            ],
        ) >= 1.0,
        "{text}"
    );
    assert!(
        sum(
            &m,
            "rpc_client_call_duration_seconds_count",
            &[
                ("server_address", "greeter.default"),
                ("mesh_destination", "greeter.default"),
                ("error_type", "INTERNAL"),
            ],
        ) >= 1.0,
        "{text}"
    );
    // A histogram in seconds, with the conventions' buckets.
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("rpc_server_call_duration_seconds_bucket{")
                && l.contains("mesh_service=\"hello.default\"")
        })
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        buckets,
        [
            "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5",
            "5", "7.5", "10", "+Inf"
        ],
        "{text}"
    );

    let Some(binary) = prometheus_binary() else {
        println!(
            "SKIPPED the Prometheus part: no /usr/bin/prometheus (apt-get install prometheus)"
        );
        traffic.abort();
        return;
    };
    let mut jobs = admins.clone();
    jobs.push(("client", client_admin));
    jobs.push(("control", control_admin));
    let prometheus = Prometheus::start(&binary, &jobs).await;

    // Every target up: the workloads' admin ports and the control service's.
    let up = until(prometheus.addr, "up", |r| {
        r.len() == jobs.len() && r.iter().all(|(_, v)| *v == 1.0)
    })
    .await;
    assert_eq!(up.len(), jobs.len(), "{up:?}");
    assert!(up.iter().all(|(_, v)| *v == 1.0), "{up:?}");
    let control_series = query(
        prometheus.addr,
        "mesh_control_certificates_issued_total{job=\"control\"}",
    )
    .await;
    assert_eq!(control_series.len(), 1, "{control_series:?}");

    // The p99 of rpc.server.call.duration per service. (One job: every admin port of this
    // process renders the same series.)
    let p99 = "histogram_quantile(0.99, sum by (le, mesh_service) \
               (rate(rpc_server_call_duration_seconds_bucket{job=\"greeter\"}[30s])))";
    let result = by_service(&until(prometheus.addr, p99, |r| by_service(r).len() == 2).await);
    let services: Vec<&str> = result.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(services, ["greeter.default", "hello.default"], "{result:?}");
    for (service, p99) in &result {
        // Loopback calls: well under a second, and above zero.
        assert!(*p99 > 0.0 && *p99 <= 1.0, "{service}: p99 {p99}");
    }

    // The error rate per service (`error_type` is set on failed calls only); a service
    // without errors shows 0.
    let total = "sum by (mesh_service) (rate(rpc_server_call_duration_seconds_count{job=\"greeter\"}[30s]))";
    let errors = "sum by (mesh_service) (rate(rpc_server_call_duration_seconds_count{job=\"greeter\", error_type!=\"\"}[30s]))";
    let error_rate = format!("({errors} / {total}) or ({total} * 0)");
    let result = by_service(
        &until(prometheus.addr, &error_rate, |r| {
            let r = by_service(r);
            r.len() == 2 && r[0].1 > 0.0
        })
        .await,
    );
    assert_eq!(result.len(), 2, "{result:?}");
    assert_eq!(result[0].0, "greeter.default");
    assert!(
        (0.1..=0.35).contains(&result[0].1),
        "one call in five fails: {result:?}"
    );
    assert_eq!(result[1], ("hello.default".to_owned(), 0.0), "{result:?}");

    traffic.abort();
    println!("prometheus test took {:?}", started.elapsed());
}
