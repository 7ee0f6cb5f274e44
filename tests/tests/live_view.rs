//! The live view of the mesh on the control service's admin port: workloads report their calls
//! on their Watch streams, `/ui/graph.json` shows the edges with their numbers, and `/ui`
//! draws them in a real headless browser (Debian's `chromium`) without a console error.
//!
//! The browser part runs when `chromium` (or `$MESH_CHROMIUM`) is found; without it the test
//! says so and passes, unless `MESH_REQUIRE_TOOLS=1` (as in CI), where a missing browser fails
//! it. `MESH_UI_SCREENSHOT=path.png` keeps the screenshot taken.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::greeter::GreeterMode;
use mesh_tests::telemetry::admin_get;
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use mesh_tower::Mesh;
use serde_json::Value;

/// The longest a browser run may take before the test gives up on it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_the_edges_and_draws_them_in_a_browser() {
    let greeter_listener = listener().await.unwrap();
    let web_listener = listener().await.unwrap();
    let config = Config::new()
        .service(
            "greeter",
            &[(greeter_listener.local_addr().unwrap(), "greeter")],
        )
        .service("web", &[(web_listener.local_addr().unwrap(), "web")])
        .account("greeter")
        .account("web")
        .account("client");
    let harness = Harness::start_with(&config, |o| {
        o.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        // Reports every second rather than every five: the test waits for them.
        o.edge_report_interval = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let admin = harness.control.as_ref().unwrap().admin_addr().unwrap();
    let _greeter = harness
        .test_greeter(
            greeter_listener,
            "g1",
            "greeter",
            "greeter",
            GreeterMode::Normal,
        )
        .await
        .unwrap();
    let _web = harness
        .web(web_listener, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();

    // A client that serves nothing calls both services; one call in five fails (never two in
    // a row, which outlier ejection would act on).
    let client_mesh = harness.mesh("client").await.unwrap();
    let mut greeter = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    for i in 0..25 {
        let name = if i % 5 == 4 { "fail-always" } else { "ann" };
        let reply = greeter.say_hello(HelloRequest { name: name.into() }).await;
        assert_eq!(reply.is_ok(), i % 5 != 4, "call {i}: {reply:?}");
    }
    let web = client_mesh.client::<Body>("web").await.unwrap();
    for i in 0..12 {
        let path = if i % 6 == 5 { "/fail/500/always" } else { "/a" };
        let expected = if i % 6 == 5 { 500 } else { 200 };
        assert_eq!(get(&web, path).await.status, expected, "call {i}");
    }
    // A workload of the web service calls greeter: an edge between two services.
    let web_caller = Mesh::start(harness.settings("web", Some("web")))
        .await
        .unwrap();
    let mut from_web = GreeterClient::new(web_caller.channel("greeter").await.unwrap());
    for _ in 0..5 {
        from_web
            .say_hello(HelloRequest { name: "web".into() })
            .await
            .unwrap();
    }

    let client_id = spiffe("client");
    let expected = [
        (client_id.as_str(), "greeter.default", 25, 5),
        (client_id.as_str(), "web.default", 12, 2),
        ("web.default", "greeter.default", 5, 0),
    ];
    // Reports go every second; calls are counted when their response ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let graph = loop {
        let graph = graph_json(admin).await;
        let complete = expected.iter().all(|(from, to, calls, _)| {
            edge(&graph, from, to).is_some_and(|e| e["calls"] == *calls)
        });
        if complete {
            break graph;
        }
        assert!(
            Instant::now() < deadline,
            "the reports did not arrive: {graph:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (from, to, calls, failures) in expected {
        let e = edge(&graph, from, to).unwrap();
        assert_eq!(e["failures"], failures, "{e}");
        let success = e["successRate"].as_f64().unwrap();
        let want = 1.0 - failures as f64 / calls as f64;
        assert!((success - want).abs() < 1e-3, "{e}");
        assert!(e["callsPerSecond"].as_f64().unwrap() > 0.0, "{e}");
        let (p50, p99) = (e["p50Ms"].as_f64().unwrap(), e["p99Ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99 && p99 < 10_000.0, "{e}");
    }
    assert_eq!(graph["schema"], 1);
    assert_eq!(graph["windowSeconds"], 30);
    assert!(graph["generatedAtUnixMs"].as_u64().unwrap() > 0);
    let greeter_node = node(&graph, "greeter.default").unwrap();
    assert_eq!(greeter_node["kind"], "service");
    assert_eq!(greeter_node["subscribers"], 1);
    assert_eq!(greeter_node["nacking"], 0);
    // The web server and the web caller both subscribe as web.
    assert_eq!(node(&graph, "web.default").unwrap()["subscribers"], 2);
    assert_eq!(node(&graph, &client_id).unwrap()["kind"], "workload");

    // The page itself, as served.
    let (status, page) = admin_get(admin, "/ui").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("/ui/graph.json"));
    assert!(only_svg_namespace(&page), "the page names a URL");

    browser_checks(admin).await;
}

/// The page names no URL but the SVG namespace (it loads nothing from anywhere).
fn only_svg_namespace(page: &str) -> bool {
    page.replace("http://www.w3.org/2000/svg", "")
        .find("http")
        .is_none()
}

async fn graph_json(admin: SocketAddr) -> Value {
    let (status, body) = admin_get(admin, "/ui/graph.json").await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn edge<'a>(graph: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    graph["edges"]
        .as_array()?
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
}

fn node<'a>(graph: &'a Value, name: &str) -> Option<&'a Value> {
    graph["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

/// Loads `/ui` in headless chromium: the DOM it builds names the services and labels the
/// edges, the console stays free of errors, and a screenshot is drawn.
async fn browser_checks(admin: SocketAddr) {
    let Some(browser) = find_browser() else {
        assert!(
            std::env::var("MESH_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "MESH_REQUIRE_TOOLS=1 but no chromium was found (set MESH_CHROMIUM or install it)"
        );
        println!("live view: no chromium found; the browser part of this test was skipped");
        return;
    };
    let url = format!("http://{admin}/ui");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (dom, log) = tokio::task::spawn_blocking({
        let (browser, url, dir) = (browser.clone(), url.clone(), dir.path().to_owned());
        move || run_browser(&browser, &dir, "dom", &["--dump-dom", &url])
    })
    .await
    .unwrap();
    let dom_took = started.elapsed();
    for expected in [
        "greeter.default",
        "web.default",
        "client (default)",
        // The edge labels and the table: 20 calls of 25 succeeded.
        "80.0%",
        "p99 ",
    ] {
        assert!(
            dom.contains(expected),
            "{expected:?} not in the DOM:\n{dom}"
        );
    }
    assert!(
        dom.contains("/s \u{b7} "),
        "no edge label in the DOM:\n{dom}"
    );
    assert!(
        !dom.contains(r#"id="status" class="error""#),
        "the page could not fetch its data:\n{dom}"
    );
    assert_no_console_errors(&log);

    let started = Instant::now();
    let png = dir.path().join("mesh-view.png");
    let screenshot = format!("--screenshot={}", png.display());
    let (_, log) = tokio::task::spawn_blocking({
        let (dir, url) = (dir.path().to_owned(), url.clone());
        move || {
            run_browser(
                &browser,
                &dir,
                "shot",
                &[&screenshot, "--window-size=1200,800", &url],
            )
        }
    })
    .await
    .unwrap();
    let shot_took = started.elapsed();
    assert_no_console_errors(&log);
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {png:?}: {e}\n{log}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank 1200x800 page compresses to a few kilobytes; a drawn graph is well above.
    assert!(
        bytes.len() > 20_000,
        "the screenshot looks empty: {} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("MESH_UI_SCREENSHOT") {
        std::fs::copy(&png, &keep).unwrap();
    }
    println!(
        "live view: browser checks took {dom_took:.1?} (DOM) and {shot_took:.1?} (screenshot)"
    );
}

/// `$MESH_CHROMIUM`, or a chromium on the `PATH`.
fn find_browser() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MESH_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs the browser headless on `args` with a fresh profile under `dir`: its stdout and its
/// stderr (where page console messages are logged).
fn run_browser(browser: &Path, dir: &Path, name: &str, args: &[&str]) -> (String, String) {
    let stdout_path = dir.join(format!("{name}.out"));
    let stderr_path = dir.join(format!("{name}.err"));
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join(format!("{name}-profile")).display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {browser:?}: {e}"));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{browser:?} did not finish within {BROWSER_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{browser:?} failed ({status}):\n{stderr}");
    (stdout, stderr)
}

/// Chromium logs the page's console messages and uncaught exceptions to stderr as lines with
/// `CONSOLE` (`:CONSOLE(12)] "message", source: ...`) or `Uncaught`; the page logs nothing, so
/// any such line is an error (a script error, a CSP violation, a failed load).
fn assert_no_console_errors(log: &str) {
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(bad.is_empty(), "console messages:\n{}", bad.join("\n"));
}

/// A control service that does not ask for reports (one that predates them, played by a wire
/// transform that clears the interval) is sent none: the client's Watch stream stays as it
/// was, and the view stays empty.
#[tokio::test]
async fn a_control_service_that_does_not_ask_gets_no_reports() {
    let greeter_listener = listener().await.unwrap();
    let config = Config::new()
        .service(
            "greeter",
            &[(greeter_listener.local_addr().unwrap(), "greeter")],
        )
        .account("greeter")
        .account("client");
    let harness = Harness::start_with(&config, |o| {
        o.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        o.edge_report_interval = Duration::from_secs(1);
        o.wire_transform = mesh_control::skew::WireTransform::new(|mut snapshot| {
            snapshot.edge_report_interval_ms = 0;
            snapshot
        });
    })
    .await
    .unwrap();
    let admin = harness.control.as_ref().unwrap().admin_addr().unwrap();
    let _greeter = harness
        .test_greeter(
            greeter_listener,
            "g1",
            "greeter",
            "greeter",
            GreeterMode::Normal,
        )
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let mut greeter = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    for _ in 0..5 {
        greeter
            .say_hello(HelloRequest { name: "ann".into() })
            .await
            .unwrap();
    }
    // Two report intervals.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let graph = graph_json(admin).await;
    assert_eq!(graph["edges"], Value::Array(vec![]), "{graph:#}");
    assert!(client_mesh.control_status().connected);
    assert!(node(&graph, &spiffe("client")).is_some(), "{graph:#}");
}
