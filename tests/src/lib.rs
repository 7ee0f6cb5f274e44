//! The end-to-end test harness, shared by every test in `tests/`: a real control service
//! reading a real config file, meshes that get real certificates from it, and greeter and
//! axum services served over mTLS on 127.0.0.1.
//!
//! Besides the example greeter, two scriptable test servers live here: [`web`] (an axum
//! backend that fails, sleeps, echoes and logs on request) and [`greeter`] (a greeter whose
//! behaviour the request's name drives).
//! [`jwks`] serves JWK Sets to the control service for end-user authentication tests.
//! [`python`] runs programs that use the standard gRPC library (grpcio) against the mesh, and
//! [`certify`] gets them certificates with `meshctl certify`.

pub mod certify;
pub mod faults;
pub mod greeter;
pub mod jwks;
pub mod python;
pub mod rawtls;
pub mod telemetry;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use examples::GreeterReplica;
use examples::hello::greeter_server::GreeterServer;
use mesh_control::{ConfigSource, ControlOptions, RunningControl};
use mesh_core::TrustDomain;
use mesh_core::snapshot::ServiceName;
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::{Mesh, MeshSettings, TokenSource};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use mesh_core::testing::{TRUST_DOMAIN, eventually};

/// Tokens in [`Config`]'s rendering: `<service-account>-token` maps to that account.
pub fn token_for(service_account: &str) -> String {
    format!("{service_account}-token")
}

/// The SPIFFE ID of a service account in the `default` namespace.
pub fn spiffe(service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{service_account}")
}

/// A mesh config under construction, rendered to the control file's YAML.
#[derive(Debug, Clone, Default)]
pub struct Config {
    services: Vec<(String, Vec<(SocketAddr, String)>)>,
    routes: Vec<(String, String)>,
    service_keys: Vec<(String, String)>,
    top_level: Vec<String>,
    /// `(namespace, service account)`.
    accounts: Vec<(String, String)>,
    /// Endpoint weights other than 1, by address.
    weights: Vec<(SocketAddr, u32)>,
    /// More keys of endpoints (`zone: a`), by address.
    endpoint_keys: Vec<(SocketAddr, String)>,
}

impl Config {
    /// An empty config.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds service `name` (namespace `default`) with endpoints `(address, service account)`.
    pub fn service(mut self, name: &str, endpoints: &[(SocketAddr, &str)]) -> Self {
        self.services.push((
            name.to_owned(),
            endpoints
                .iter()
                .map(|(a, sa)| (*a, sa.to_string()))
                .collect(),
        ));
        self
    }

    /// Gives the endpoint at `addr` (of any service) weight `weight`.
    pub fn weight(mut self, addr: SocketAddr, weight: u32) -> Self {
        self.weights.push((addr, weight));
        self
    }

    /// Puts the endpoint at `addr` (of any service) in zone `zone`.
    pub fn zone(self, addr: SocketAddr, zone: &str) -> Self {
        self.endpoint_keys(addr, &format!("zone: {zone}"))
    }

    /// Adds keys to the mapping of the endpoint at `addr` (of any service), e.g.
    /// `forZones: [zone-b]` (one line of YAML).
    pub fn endpoint_keys(mut self, addr: SocketAddr, yaml: &str) -> Self {
        self.endpoint_keys.push((addr, yaml.to_owned()));
        self
    }

    /// Attaches routes to service `name` (added with [`Config::service`]): `yaml` is the list
    /// that goes under the service's `routes:` key, written at any indentation, e.g.
    ///
    /// ```text
    /// - name: split
    ///   rules:
    ///     - backendRefs: [{name: web-v1, weight: 90}, {name: web-v2, weight: 10}]
    /// ```
    ///
    /// Calling it again for the same service appends more routes.
    pub fn routes(mut self, name: &str, yaml: &str) -> Self {
        self.routes.push((name.to_owned(), yaml.to_owned()));
        self
    }

    /// Adds keys to service `name`'s mapping, e.g. `defaultPolicy: deny` or
    /// `exemptPaths: [/healthz]` (YAML at any indentation).
    pub fn service_keys(mut self, name: &str, yaml: &str) -> Self {
        self.service_keys.push((name.to_owned(), yaml.to_owned()));
        self
    }

    /// Adds top-level YAML, e.g. a `policies:` list or `defaultPolicy: all-authenticated`.
    pub fn top_level(mut self, yaml: &str) -> Self {
        self.top_level.push(yaml.to_owned());
        self
    }

    /// Adds a bootstrap token `<account>-token` for service account `account`.
    pub fn account(self, account: &str) -> Self {
        self.account_in("default", account)
    }

    /// Adds a bootstrap token `<account>-token` for service account `account` of
    /// `namespace` (a caller outside `default`, for consumer routes).
    pub fn account_in(mut self, namespace: &str, account: &str) -> Self {
        self.accounts
            .push((namespace.to_owned(), account.to_owned()));
        self
    }

    /// The control file's YAML.
    pub fn render(&self) -> String {
        let mut yaml = String::from("services:\n");
        for (name, endpoints) in &self.services {
            yaml += &format!("  - name: {name}\n    namespace: default\n");
            yaml += if endpoints.is_empty() {
                "    endpoints: []\n"
            } else {
                "    endpoints:\n"
            };
            for (addr, sa) in endpoints {
                yaml += &format!(
                    "      - address: \"{addr}\"\n        identity: {}\n",
                    spiffe(sa)
                );
                if let Some((_, weight)) = self.weights.iter().find(|(a, _)| a == addr) {
                    yaml += &format!("        weight: {weight}\n");
                }
                for (_, keys) in self.endpoint_keys.iter().filter(|(a, _)| a == addr) {
                    yaml += &format!("        {keys}\n");
                }
            }
            for (_, keys) in self.service_keys.iter().filter(|(s, _)| s == name) {
                yaml += &indent(keys, 4);
            }
            let routes: Vec<&str> = self
                .routes
                .iter()
                .filter(|(service, _)| service == name)
                .map(|(_, yaml)| yaml.as_str())
                .collect();
            if !routes.is_empty() {
                yaml += "    routes:\n";
                for snippet in routes {
                    yaml += &indent(snippet, 6);
                }
            }
        }
        for snippet in &self.top_level {
            yaml += &indent(snippet, 0);
        }
        yaml += "bootstrapTokens:\n";
        for (namespace, account) in &self.accounts {
            yaml += &format!(
                "  - token: {}\n    namespace: {namespace}\n    serviceAccount: {account}\n",
                token_for(account)
            );
        }
        yaml
    }
}

/// `text` with its common leading indentation replaced by `spaces` spaces; blank lines dropped.
fn indent(text: &str, spaces: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let common = lines
        .iter()
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let pad = " ".repeat(spaces);
    lines
        .iter()
        .map(|l| format!("{pad}{}\n", &l[common..]))
        .collect()
}

/// A running control service reading a config file in a temporary directory.
pub struct Harness {
    /// The control service.
    pub control: Option<RunningControl>,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The trust anchors file clients start with.
    pub anchors: PathBuf,
    /// The config file the control service watches.
    pub config_path: PathBuf,
    control_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a control service on `config`.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        Self::start_with(config, |_| {}).await
    }

    /// Starts a control service on `config`, with `options` adjusted first (e.g. a short
    /// certificate lifetime).
    pub async fn start_with(
        config: &Config,
        adjust: impl FnOnce(&mut ControlOptions),
    ) -> anyhow::Result<Self> {
        init_test_logging();
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("mesh.yaml");
        std::fs::write(&config_path, config.render())?;
        let trust_domain = mesh_core::testing::trust_domain();
        let anchors = dir.path().join("trust-bundle.pem");
        let mut options = ControlOptions::new(
            trust_domain.clone(),
            ConfigSource::File(config_path.clone()),
        );
        options.trust_bundle_out = Some(anchors.clone());
        // Clients in other languages dial the control service by this name and check it
        // against its certificate (gRPC's xDS client does).
        options.server_names = vec!["localhost".to_owned()];
        adjust(&mut options);
        let control = mesh_control::start(options).await?;
        Ok(Self {
            control_addr: control.addr(),
            control: Some(control),
            trust_domain,
            anchors,
            config_path,
            _dir: dir,
        })
    }

    /// Replaces the config file (atomically, as an editor's save would).
    pub fn write_config(&self, config: &Config) -> anyhow::Result<()> {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, config.render())?;
        std::fs::rename(&tmp, &self.config_path)?;
        Ok(())
    }

    /// The control service's gRPC address (it stays the same while the harness lives).
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The control service's config version.
    pub fn config_version(&self) -> u64 {
        self.control
            .as_ref()
            .map_or(0, RunningControl::config_version)
    }

    /// Replaces the config file with `config` and waits (up to 5 s) until `mesh` has received
    /// the new snapshot; the clients it made apply it right after.
    pub async fn reconfigure(&self, mesh: &Mesh, config: &Config) -> anyhow::Result<()> {
        let control = self
            .control
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the control service is stopped"))?;
        let before = control.config_version();
        self.write_config(config)?;
        // The version of this config, not merely a newer one: the control service also
        // publishes versions of its own (new roots), which could be taken for it.
        let version = tokio::time::timeout(Duration::from_secs(5), control.version_after(before))
            .await
            .map_err(|_| anyhow::anyhow!("the control service did not take the new config"))?;
        if eventually(Duration::from_secs(5), || {
            mesh.control_status().version >= version
        })
        .await
        {
            Ok(())
        } else {
            anyhow::bail!("the mesh did not receive the new config within 5 s")
        }
    }

    /// Stops the control service.
    pub async fn stop_control(&mut self) {
        if let Some(control) = self.control.take() {
            control.shutdown().await;
        }
    }

    /// Settings for a workload running as `account`, serving `service` if given.
    pub fn settings(&self, account: &str, service: Option<&str>) -> MeshSettings {
        let mut settings = MeshSettings::new(
            self.control_addr.to_string(),
            self.trust_domain.clone(),
            &self.anchors,
            TokenSource::Inline(token_for(account)),
        )
        .with_node(format!("{account}-test"));
        settings.service_account = account.to_owned();
        settings.startup_timeout = Duration::from_secs(10);
        settings.ready_timeout = Duration::from_secs(2);
        if let Some(service) = service {
            settings = settings.with_service(ServiceName {
                namespace: "default".into(),
                name: service.into(),
            });
        }
        settings
    }

    /// A started mesh for a workload running as `account`.
    pub async fn mesh(&self, account: &str) -> anyhow::Result<Mesh> {
        Ok(Mesh::start(self.settings(account, None)).await?)
    }

    /// Starts a greeter replica called `name` on `listener`, running as `account`.
    pub async fn greeter(
        &self,
        listener: TcpListener,
        name: &str,
        account: &str,
    ) -> anyhow::Result<Replica> {
        self.greeter_with_settings(listener, name, self.settings(account, Some("greeter")))
            .await
    }

    /// Starts a greeter replica called `name` on `listener` with a mesh started from
    /// `settings` (e.g. [`Harness::settings`] with a state directory added).
    pub async fn greeter_with_settings(
        &self,
        listener: TcpListener,
        name: &str,
        settings: MeshSettings,
    ) -> anyhow::Result<Replica> {
        let mesh = Mesh::start(settings).await?;
        let greeter = GreeterReplica::new(name, mesh.identity().id().to_string());
        let addr = listener.local_addr()?;
        let task = serve_greeter(mesh, listener, greeter.clone())?;
        Ok(Replica {
            addr,
            greeter,
            task,
        })
    }
}

/// A greeter replica started by [`Harness::greeter`]; stops when dropped.
pub struct Replica {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handler (counts calls served).
    pub greeter: GreeterReplica,
    task: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `greeter` over `mesh`'s mTLS listener, behind the mesh's tonic layer, until the
/// returned task is aborted (it keeps the mesh alive).
pub fn serve_greeter<G: examples::hello::greeter_server::Greeter>(
    mesh: Mesh,
    listener: TcpListener,
    greeter: G,
) -> anyhow::Result<JoinHandle<()>> {
    let incoming = mesh.tonic_incoming(listener)?;
    let service = mesh.serving(GreeterServer::new(greeter));
    let server = mesh.tonic_server();
    Ok(tokio::spawn(async move {
        let _mesh = mesh;
        let _ = server
            .layer(MeshLayer::new())
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    }))
}

/// Binds a listener on a free loopback port.
pub async fn listener() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

/// Runs `calls` calls of `call(i)`, `in_flight` at a time (as a busy caller would), and gives
/// their results in call order.
pub async fn concurrently<T, F, Fut>(calls: usize, in_flight: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (next, call) = (next.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    return results;
                }
                results.push((i, call(i).await));
            }
        }));
    }
    let mut results = Vec::with_capacity(calls);
    for task in tasks {
        match task.await {
            Ok(done) => results.extend(done),
            // A panicking call fails the test with its own message.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
