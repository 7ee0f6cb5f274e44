//! `meshctl`, the binary, on control files written to a temporary directory: `check` reports
//! each mistake with its field path and exit status, `routes` lists rules in precedence order,
//! and `explain` agrees with the routing and authorization decisions real calls get (fixtures
//! mirror tests/tests/matching.rs and tests/tests/authz.rs).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use http::{HeaderMap, HeaderValue, Method, Uri};
use mesh_core::route::{CompiledRoutes, RequestSummary, RouteOutcome};
use mesh_core::testing::trust_domain;
use serde_json::Value;

/// A temporary directory with control files in it.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// What a run printed, and its exit status.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn meshctl(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env_remove("MESH_TRUST_DOMAIN")
        .output()
        .unwrap();
    Run {
        status: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn endpoint(address: &str, account: &str) -> String {
    format!("{{address: \"{address}\", identity: \"spiffe://mesh.local/ns/default/sa/{account}\"}}")
}

// === check ===

#[test]
fn check_passes_a_clean_file() {
    let dir = Dir::new();
    let file = dir.file(
        "clean.yaml",
        &format!(
            "services:\n  - name: web\n    endpoints: [{}]\n    routes:\n      - name: api\n        rules:\n          - matches: [{{path: {{value: /api}}}}]\n            backendRefs: [{{name: web}}]\n",
            endpoint("10.0.0.1:8080", "web")
        ),
    );
    let run = meshctl(&["check", "--config", path(&file)]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.ends_with("0 error(s), 0 warning(s)\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_reports_each_mistake_with_its_field_path() {
    let web = endpoint("10.0.0.1:8080", "web");
    let v1 = endpoint("10.0.0.2:8080", "web");
    // (fixture, a line `check` must print)
    let cases = [
        // The control service refuses these: errors.
        (
            "services:\n  - name: web\n    endpoints: [{address: nowhere, identity: \"spiffe://mesh.local/ns/default/sa/web\"}]\n".to_owned(),
            "error: services[0].endpoints[0].address: ",
        ),
        (
            "services:\n  - name: web\n    endpionts: []\n".to_owned(),
            "error: line 3 column 5: services[0]: unknown field `endpionts`",
        ),
        (
            format!(
                "services:\n  - name: web\n    endpoints: [{web}]\npolicies:\n  - name: p\n    target: {{service: wbe}}\n    action: ALLOW\n    rules: [{{from: {{namespaces: [default]}}}}]\n"
            ),
            "error: policies[0].target.service: unknown service \"wbe.default\"",
        ),
        // Valid, but hurt: warnings.
        (
            format!(
                "services:\n  - name: web\n    endpoints: [{web}]\n    routes:\n      - name: api\n        rules:\n          - matches: [{{path: {{value: /api}}}}]\n            backendRefs: [{{name: web}}]\n          - matches: [{{path: {{value: /api/}}}}]\n            backendRefs: [{{name: web-v1}}]\n  - name: web-v1\n    endpoints: [{v1}]\n"
            ),
            "warning: services[0].routes[0].rules[1]: shadowed: earlier rules[0] (its matches[0]) ranks ahead",
        ),
        (
            format!(
                "services:\n  - name: web\n    endpoints: [{web}]\n    routes:\n      - name: all\n        rules:\n          - backendRefs: [{{name: web}}]\n          - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n            backendRefs: [{{name: web-v1}}]\n  - name: web-v1\n    endpoints: [{v1}]\n"
            ),
            "warning: services[0].routes[0].rules[1]: shadowed: earlier rules[0] (its implicit match-all)",
        ),
        (
            format!(
                "services:\n  - name: web\n    endpoints: [{web}]\n    routes:\n      - name: split\n        rules:\n          - backendRefs: [{{name: web}}, {{name: web-v2}}]\n  - name: web-v2\n    endpoints: []\n"
            ),
            "warning: services[0].routes[0].rules[0].backendRefs[1]: backend web-v2.default has no endpoints",
        ),
        (
            format!(
                "services:\n  - name: web\n    endpoints: [{web}]\n    routes:\n      - name: split\n        rules:\n          - backendRefs: [{{name: web-v3, namespace: shop}}]\n"
            ),
            "warning: services[0].routes[0].rules[0].backendRefs[0]: backend web-v3.shop is not a service (or port) of the config",
        ),
        (
            format!(
                "services:\n  - name: web\n    endpoints: [{web}]\n    routes:\n      - name: off\n        rules:\n          - backendRefs: [{{name: web, weight: 0}}]\n"
            ),
            "warning: services[0].routes[0].rules[0]: has only backends of weight 0: every request it matches fails",
        ),
        (
            format!(
                "services:\n  - name: greeter\n    endpoints: [{web}]\npolicies:\n  - name: reads\n    target: {{service: greeter}}\n    action: ALLOW\n    rules:\n      - from: {{namespaces: [shop]}}\n        to: {{methods: [GET], grpc: [{{service: helloworld.Greeter}}]}}\n"
            ),
            "warning: policies[0].rules[0].to: matches no request: it names gRPC methods, which are called with POST",
        ),
        (
            format!(
                "services:\n  - name: greeter\n    endpoints: [{web}]\npolicies:\n  - name: ports\n    target: {{service: greeter}}\n    action: DENY\n    rules:\n      - from: {{identities: [\"*\"]}}\n        to: {{ports: [9090]}}\n"
            ),
            "warning: policies[0].rules[0].to: matches no request: none of its ports is one the service's endpoints listen on (8080)",
        ),
        (
            format!(
                "services:\n  - name: greeter\n    endpoints: [{web}]\npolicies:\n  - name: plain\n    target: {{service: greeter}}\n    action: ALLOW\n    rules:\n      - from: {{unauthenticated: true}}\n"
            ),
            "warning: policies[0].rules[0].from: matches no caller: it names only callers without an identity, and greeter.default is in strict mTLS mode",
        ),
    ];
    let dir = Dir::new();
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let file = dir.file(&format!("case-{i}.yaml"), yaml);
        let run = meshctl(&["check", "--config", path(&file)]);
        assert_eq!(run.status, 1, "case {i}: {}{}", run.stdout, run.stderr);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "case {i}: expected a line starting with {expected:?}, got:\n{}",
            run.stdout
        );
        // Exactly the one mistake of the fixture.
        assert_eq!(lines.len(), 2, "case {i}:\n{}", run.stdout);
        let is_warning = expected.starts_with("warning");
        let ok = meshctl(&["check", "--warnings-ok", "--config", path(&file)]);
        assert_eq!(ok.status, if is_warning { 0 } else { 1 }, "case {i}");
    }

    // The same report as JSON, with the field path on its own.
    let file = dir.file("case-0.yaml", &cases[0].0);
    let report = meshctl(&["check", "-o", "json", "--config", path(&file)]).json();
    assert_eq!(
        report["errors"][0]["path"],
        "services[0].endpoints[0].address"
    );
    assert_eq!(report["warnings"], Value::Array(Vec::new()));
}

#[test]
fn check_reports_trust_anchors_that_expire_soon_or_have_expired() {
    let dir = Dir::new();
    let file = dir.file("mesh.yaml", "services: []\n");
    let now = time::OffsetDateTime::now_utc();
    let root = |not_before: time::OffsetDateTime, not_after: time::OffsetDateTime| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = not_before;
        params.not_after = not_after;
        params.self_signed(&key).unwrap().pem()
    };
    let day = time::Duration::days(1);
    let bundle = dir.file(
        "bundle.pem",
        &[
            root(now - day, now + day * 365),
            root(now - day, now + day * 10),
            root(now - day * 10, now - day),
        ]
        .concat(),
    );
    let run = meshctl(&[
        "check",
        "--config",
        path(&file),
        "--trust-bundle",
        path(&bundle),
    ]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].starts_with("warning: trustBundle[1]: anchor "));
    assert!(lines[0].contains(", in 9 day(s)") || lines[0].contains(", in 10 day(s)"));
    assert!(lines[1].starts_with("warning: trustBundle[2]: anchor "));
    assert!(lines[1].contains("expired on"), "{}", lines[1]);

    let garbage = dir.file("garbage.pem", "not a certificate\n");
    let run = meshctl(&[
        "check",
        "--config",
        path(&file),
        "--trust-bundle",
        path(&garbage),
    ]);
    assert_eq!(run.status, 2, "{}", run.stderr);
}

#[test]
fn usage_and_io_errors_exit_2() {
    let run = meshctl(&["check", "--config", "/nonexistent/mesh.yaml"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.starts_with("meshctl: error: cannot read"),
        "{}",
        run.stderr
    );
    let run = meshctl(&["routes", "--config", "x.yaml", "not-a-destination"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    let dir = Dir::new();
    let file = dir.file("bad.yaml", "services: 3\n");
    let run = meshctl(&["routes", "web.default", "--config", path(&file)]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("meshctl check"), "{}", run.stderr);
}

// === routes ===

#[test]
fn routes_lists_rules_in_precedence_order() {
    let dir = Dir::new();
    let web = endpoint("10.0.0.1:8080", "web");
    let file = dir.file(
        "mesh.yaml",
        &format!(
            r#"
services:
  - name: web
    endpoints: [{web}]
    routes:
      - name: everything
        rules:
          - backendRefs: [{{name: web}}]
          - name: api
            matches: [{{path: {{value: /api}}}}, {{path: {{type: Exact, value: /status}}}}]
            backendRefs: [{{name: web, weight: 3}}, {{name: web-v2, weight: 1}}]
            timeouts: {{request: 2s}}
            retry: {{codes: [503], attempts: 2}}
      - name: canary
        rules:
          - matches: [{{path: {{value: /api}}, headers: [{{name: x-canary, value: "true"}}]}}]
            backendRefs: [{{name: web-v2}}]
            hedging: {{maxAttempts: 3, nonFatalCodes: [503]}}
  - name: web-v2
    endpoints: [{web}]
"#
        ),
    );
    let run = meshctl(&["routes", "web.default", "--config", path(&file)]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let entries: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && l.trim_start().starts_with(char::is_numeric))
        .map(str::trim)
        .collect();
    assert_eq!(
        entries,
        [
            r#"1. route "everything" rule 1 ("api") matches[1]: path Exact "/status""#,
            r#"2. route "canary" rule 0 matches[0]: path PathPrefix "/api", header x-canary Exact "true""#,
            r#"3. route "everything" rule 1 ("api") matches[0]: path PathPrefix "/api""#,
            r#"4. route "everything" rule 0 no matches (match-all): path PathPrefix "/""#,
        ],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("-> web.default weight 3 (75%), 1 endpoint(s)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("timeouts: request 2s, per try none"));
    assert!(run.stdout.contains("retry: 2 attempt(s) on 503"));
    assert!(
        run.stdout
            .contains("hedging: up to 3 tries, each after p95, at once after 503"),
        "{}",
        run.stdout
    );

    let table = meshctl(&[
        "-o",
        "json",
        "routes",
        "web.default",
        "--config",
        path(&file),
    ])
    .json();
    let http = table["http"].as_array().unwrap();
    assert_eq!(http.len(), 4);
    assert_eq!(http[2]["rule"]["backends"][1]["percent"], 25.0);
    assert_eq!(http[2]["rule"]["requestTimeout"], "2s");
    assert_eq!(table["grpc"], Value::Array(Vec::new()));
}

// === explain ===

/// What `explain -o json` decided: (outcome, route/rule applied, verdicts as `server=verdict`).
fn explain(file: &Path, caller: &str, request: &[&str]) -> (String, String, Vec<String>) {
    let caller = format!("spiffe://mesh.local/ns/default/sa/{caller}");
    let mut args = vec![
        "-o",
        "json",
        "explain",
        "--config",
        path(file),
        "--as",
        &caller,
    ];
    args.extend_from_slice(request);
    let run = meshctl(&args);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let e = run.json();
    let rule = match &e["rule"] {
        Value::Null => "-".to_owned(),
        rule => format!("{}/{}", rule["route"].as_str().unwrap(), rule["index"]),
    };
    let verdicts = e["authorization"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}={}:{}",
                a["server"].as_str().unwrap(),
                a["verdict"].as_str().unwrap(),
                a["decidedBy"].as_str().unwrap()
            )
        })
        .collect();
    (e["outcome"].as_str().unwrap().to_owned(), rule, verdicts)
}

/// The rule mesh-core routes the request to, in this process: what the client does.
fn routed(
    file: &Path,
    destination: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let config = mesh_control::file::parse(&text, &trust_domain()).unwrap();
    let destination = config.mesh.destination(&destination.parse().unwrap());
    let routes = CompiledRoutes::new(&destination);
    let method: Method = method.parse().unwrap();
    let uri: Uri = uri.parse().unwrap();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match routes.route(&RequestSummary::new(&method, &uri, &map)) {
        RouteOutcome::Matched(m) => format!("{}/{}", m.rule.route_name(), m.rule.rule_index()),
        RouteOutcome::NotFound | RouteOutcome::NoRoutes => "-".to_owned(),
    }
}

/// tests/tests/matching.rs: an x-canary header pins to v2, other calls follow the weights;
/// a request no route matches gets 404 and reaches no backend.
#[test]
fn explain_agrees_with_routing() {
    let dir = Dir::new();
    let file = dir.file(
        "mesh.yaml",
        &format!(
            r#"
services:
  - name: greeter
    endpoints: []
    routes:
      - name: canary
        kind: grpc
        rules:
          - matches:
              - headers: [{{name: x-canary, value: "true"}}]
            backendRefs: [{{name: greeter-v2}}]
          - backendRefs:
              - {{name: greeter-v1, weight: 90}}
              - {{name: greeter-v2, weight: 10}}
  - name: greeter-v1
    endpoints: [{}]
  - name: greeter-v2
    endpoints: [{}]
  - name: web
    endpoints: [{}]
    routes:
      - name: only-api
        rules:
          - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
            backendRefs: [{{name: web}}]
"#,
            endpoint("127.0.0.1:50051", "greeter"),
            endpoint("127.0.0.1:50052", "greeter"),
            endpoint("127.0.0.1:8080", "web"),
        ),
    );
    let grpc_headers = [("content-type", "application/grpc")];
    let canary = [("content-type", "application/grpc"), ("x-canary", "true")];
    let not_canary = [("content-type", "application/grpc"), ("x-canary", "false")];
    let say_hello = "/helloworld.Greeter/SayHello";

    let pinned = explain(
        &file,
        "client",
        &[
            "--grpc",
            "helloworld.Greeter/SayHello",
            "-H",
            "x-canary: true",
            "greeter.default",
        ],
    );
    assert_eq!(pinned.0, "matched");
    assert_eq!(pinned.1, "canary/0");
    assert_eq!(
        pinned.1,
        routed(&file, "greeter.default", "POST", say_hello, &canary)
    );
    assert_eq!(
        pinned.2,
        ["greeter-v2.default=allow:default:all-unauthenticated"]
    );

    for headers in [&["-H", "x-canary: false"][..], &[]] {
        let mut request = vec!["--grpc", "helloworld.Greeter/SayHello"];
        request.extend_from_slice(headers);
        request.push("greeter.default");
        let split = explain(&file, "client", &request);
        assert_eq!(split.1, "canary/1");
        assert_eq!(
            split.2,
            [
                "greeter-v1.default=allow:default:all-unauthenticated",
                "greeter-v2.default=allow:default:all-unauthenticated"
            ]
        );
    }
    assert_eq!(
        routed(&file, "greeter.default", "POST", say_hello, &not_canary),
        "canary/1"
    );
    assert_eq!(
        routed(&file, "greeter.default", "POST", say_hello, &grpc_headers),
        "canary/1"
    );

    let api = explain(&file, "client", &["GET", "http://web.default/api/items"]);
    assert_eq!(api.1, "only-api/0");
    assert_eq!(
        api.1,
        routed(&file, "web.default", "GET", "/api/items", &[])
    );
    let other = explain(&file, "client", &["GET", "http://web.default/other"]);
    assert_eq!(other, ("not-found".to_owned(), "-".to_owned(), Vec::new()));
    assert_eq!(routed(&file, "web.default", "GET", "/other", &[]), "-");

    // Why the earlier candidates failed, for people.
    let caller = "spiffe://mesh.local/ns/default/sa/client";
    let run = meshctl(&[
        "explain",
        "--config",
        path(&file),
        "--as",
        caller,
        "--grpc",
        "helloworld.Greeter/SayHello",
        "greeter.default",
    ]);
    assert!(
        run.stdout.contains(
            r#"1. route "canary" rule 0 matches[0] (header x-canary Exact "true"): no: header x-canary is missing or not Exact "true""#
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(r#"2. route "canary" rule 1 match-all (any request): MATCHED"#)
    );
    let run = meshctl(&[
        "explain",
        "--config",
        path(&file),
        "--as",
        caller,
        "GET",
        "http://web.default/other",
    ]);
    assert!(
        run.stdout
            .contains(r#"no: path "/other" is not under "/api""#),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("fails: no rule matches"),
        "{}",
        run.stdout
    );
}

/// tests/tests/authz.rs: allowed, denied and audited by policy; default deny with an exempt
/// probe path; a policy on one route applies to that route only.
#[test]
fn explain_gives_the_verdicts_of_the_policies() {
    let dir = Dir::new();
    let file = dir.file(
        "mesh.yaml",
        &format!(
            r#"
services:
  - name: greeter
    endpoints: [{}]
    defaultPolicy: deny
  - name: web
    endpoints: [{}]
    defaultPolicy: deny
    exemptPaths: [/healthz]
  - name: shop
    endpoints: [{}]
    routes:
      - name: admin
        rules:
          - matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
            backendRefs: [{{name: shop}}]
      - name: everything
        rules:
          - backendRefs: [{{name: shop}}]
policies:
  - name: client-may-greet
    target: {{service: greeter}}
    action: ALLOW
    rules:
      - from: {{identities: ["spiffe://mesh.local/ns/default/sa/client"]}}
        to: {{grpc: [{{service: helloworld.Greeter, method: SayHello}}]}}
  - name: no-intruder
    target: {{service: greeter}}
    action: DENY
    rules:
      - from: {{serviceAccounts: [default/intruder]}}
  - name: watch-client
    target: {{service: greeter}}
    action: DENY
    mode: audit
    rules:
      - from: {{identities: ["spiffe://mesh.local/ns/default/sa/client"]}}
  - name: no-admin-for-clients
    target: {{service: shop, route: admin}}
    action: DENY
    rules:
      - from: {{serviceAccounts: [default/client]}}
"#,
            endpoint("127.0.0.1:50051", "greeter"),
            endpoint("127.0.0.1:8080", "web"),
            endpoint("127.0.0.1:8081", "shop"),
        ),
    );
    let hello = ["--grpc", "helloworld.Greeter/SayHello", "greeter.default"];
    let verdict = |caller: &str, request: &[&str]| explain(&file, caller, request).2;
    // Allowed by `client-may-greet`; the audit-mode DENY only records.
    assert_eq!(
        verdict("client", &hello),
        ["greeter.default=audit:client-may-greet"]
    );
    assert_eq!(
        verdict("stranger", &hello),
        ["greeter.default=deny:no-allow-matched"]
    );
    assert_eq!(
        verdict("intruder", &hello),
        ["greeter.default=deny:no-intruder"]
    );
    assert_eq!(
        verdict("client", &["GET", "http://web.default/orders"]),
        ["web.default=deny:default:deny"]
    );
    assert_eq!(
        verdict("client", &["GET", "http://web.default/healthz"]),
        ["web.default=allow:exempt"]
    );
    assert_eq!(
        verdict("client", &["GET", "http://shop.default/admin/users"]),
        ["shop.default=deny:no-admin-for-clients"]
    );
    assert_eq!(
        verdict("client", &["GET", "http://shop.default/orders"]),
        ["shop.default=allow:default:all-unauthenticated"]
    );

    // For people: the policy and its rule that decided.
    let run = meshctl(&[
        "explain",
        "--config",
        path(&file),
        "--as",
        "spiffe://mesh.local/ns/default/sa/intruder",
        "--grpc",
        "helloworld.Greeter/SayHello",
        "greeter.default",
    ]);
    assert!(
        run.stdout.contains(
            r#"greeter.default port 50051: DENY (denied by DENY policy "no-intruder" (rules[0]))"#
        ),
        "{}",
        run.stdout
    );
}

/// `explain --jwt-issuer`: rules on principals and claims, judged as the server would for a
/// request carrying a valid token of that end user; the verdict names the rule.
#[test]
fn explain_judges_rules_on_principals_and_claims() {
    let dir = Dir::new();
    let file = dir.file(
        "jwt.yaml",
        r#"
services:
  - name: web
    endpoints: [{address: "127.0.0.1:8080", identity: spiffe://mesh.local/ns/default/sa/web}]
requestAuthentications:
  - name: users
    target: {service: web}
    jwtRules: [{issuer: "https://issuer.test", jwksUri: "https://issuer.test/jwks"}]
policies:
  - name: admins
    target: {service: web}
    action: ALLOW
    rules:
      - from: {identities: ["*"]}
        to: {paths: [/public]}
      - from: {identities: ["*"]}
        principal:
          requestPrincipals: ["https://issuer.test/*"]
          claims: [{name: groups, values: [admin]}]
"#,
    );
    let get = ["GET", "http://web.default/admin"];
    let issuer = [
        "--jwt-issuer",
        "https://issuer.test",
        "--jwt-subject",
        "ann",
    ];
    let cases: [(&[&str], &str); 3] = [
        (&[], "web.default=deny:no-allow-matched"),
        (&issuer, "web.default=deny:no-allow-matched"),
        (
            &["--jwt-claims", r#"{"groups": ["admin"]}"#],
            "web.default=allow:admins",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let mut args: Vec<&str> = if i == 2 { issuer.to_vec() } else { Vec::new() };
        args.extend_from_slice(extra);
        args.extend_from_slice(&get);
        let (_, _, verdicts) = explain(&file, "client", &args);
        assert_eq!(verdicts, [*want], "case {i}");
    }
    let run = meshctl(&[
        "explain",
        "--config",
        path(&file),
        "--as",
        "spiffe://mesh.local/ns/default/sa/client",
        "--jwt-issuer",
        "https://issuer.test",
        "--jwt-claims",
        r#"{"groups": ["admin"]}"#,
        "GET",
        "http://web.default/admin",
    ]);
    assert!(
        run.stdout.contains("rules[1]"),
        "the rule is named: {}",
        run.stdout
    );
}
