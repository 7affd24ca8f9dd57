//! The whole system for one end-to-end test, in a few lines:
//!
//! ```ignore
//! let h = Harness::builder().secret("prod/api/key", KEY).start().await;
//! let token = h.issue(agent().scope("secrets:read:prod/**").ttl(60)).await;
//! let res = h.agent(&token).get(h.url("/echo"))
//!     .header("authorization", "Bearer {{secret:prod/api/key}}")
//!     .send().await.unwrap();
//! assert_eq!(h.upstream.last().header("authorization"), Some(format!("Bearer {KEY}").as_str()));
//! ```
//!
//! Everything listens on `127.0.0.1:0` and lives in the test's runtime and temporary
//! directory: dropping the harness (also when the test panics) stops the control plane and the
//! sidecar and removes their files.

use agent_secret_control_plane::service::sessions::SessionSettings;
use agent_secret_control_plane::service::Policy;
use agent_secret_core::api::operator::IssueTokenRequest;
use agent_secret_proxy::{ProxyConfig, RunningSidecar};
use serde_json::Value;

use crate::control_plane::{test_sessions, ControlPlane, Install, Tenant};
use crate::sidecar::{local_host, start_sidecar};
use crate::upstream::Upstream;

/// A token request an agent makes (`POST /v1/tokens`, the API's own type). Start one with
/// [`agent`].
#[derive(Clone, Debug)]
pub struct AgentToken(pub IssueTokenRequest);

/// A token request with no scope yet and a ten-minute lifetime.
pub fn agent() -> AgentToken {
    AgentToken(IssueTokenRequest {
        scopes: Vec::new(),
        ttl_seconds: 600,
        ip_allowlist: None,
        max_uses: None,
        request_access: false,
    })
}

impl AgentToken {
    /// Adds a scope, e.g. `secrets:read:prod/**`.
    pub fn scope(mut self, scope: &str) -> AgentToken {
        self.0.scopes.push(scope.to_owned());
        self
    }

    /// Lifetime in seconds.
    pub fn ttl(mut self, seconds: u64) -> AgentToken {
        self.0.ttl_seconds = seconds;
        self
    }

    /// How many requests may use the token.
    pub fn max_uses(mut self, uses: u32) -> AgentToken {
        self.0.max_uses = Some(uses);
        self
    }

    /// Addresses (CIDR) the token may be used from.
    pub fn from_ips(mut self, cidrs: &[&str]) -> AgentToken {
        self.0.ip_allowlist = Some(cidrs.iter().map(|c| (*c).to_owned()).collect());
        self
    }
}

/// A token the control plane issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub id: String,
    pub token: String,
}

type Configure = Box<dyn FnOnce(&mut ProxyConfig) + Send>;

/// What to start; [`HarnessBuilder::start`] starts it.
pub struct HarnessBuilder {
    secrets: Vec<(String, String)>,
    policy: Policy,
    database: Option<String>,
    upstream: Option<Upstream>,
    configure: Vec<Configure>,
    sessions: Option<SessionSettings>,
}

impl HarnessBuilder {
    /// Human-session settings other than the tests' defaults (a short idle timeout, say).
    pub fn sessions(mut self, change: impl FnOnce(&mut SessionSettings)) -> HarnessBuilder {
        let mut sessions = test_sessions();
        change(&mut sessions);
        self.sessions = Some(sessions);
        self
    }

    /// A secret the tenant stores, allowed for the upstream's host.
    pub fn secret(mut self, path: &str, value: &str) -> HarnessBuilder {
        self.secrets.push((path.to_owned(), value.to_owned()));
        self
    }

    /// The control plane's token policy (the default otherwise).
    pub fn policy(mut self, policy: Policy) -> HarnessBuilder {
        self.policy = policy;
        self
    }

    /// A database URL instead of a SQLite file in the test's directory.
    pub fn database(mut self, url: String) -> HarnessBuilder {
        self.database = Some(url);
        self
    }

    /// An upstream other than a plain HTTP echo server.
    pub fn upstream(mut self, upstream: Upstream) -> HarnessBuilder {
        self.upstream = Some(upstream);
        self
    }

    /// Changes the sidecar's configuration before it starts (routes, caches, limits...).
    pub fn sidecar(mut self, configure: impl FnOnce(&mut ProxyConfig) + Send + 'static) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    /// Starts the control plane, creates a tenant (admin, sidecar, agent) with the secrets,
    /// and starts the upstream and a sidecar that may reach it.
    pub async fn start(self) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let install = Install::new(dir.path(), self.database).await;
        let sessions = self.sessions.unwrap_or_else(test_sessions);
        let addr = "127.0.0.1:0".parse().unwrap();
        let cp = ControlPlane::serve_with(&install, addr, self.policy, sessions).await;
        let tenant = Tenant::create(&cp, "acme").await;
        let upstream = match self.upstream {
            Some(upstream) => upstream,
            None => Upstream::http().await,
        };
        let host = upstream.authority();
        for (path, value) in &self.secrets {
            tenant.put_secret(&cp, path, value, &[&host]).await;
        }
        let configure = self.configure;
        let sidecar = start_sidecar(&install, &cp, &tenant.sidecar_key, |config| {
            config.hosts.push(local_host(&host));
            for change in configure {
                change(config);
            }
        })
        .await;
        Harness {
            sidecar,
            upstream,
            tenant,
            cp,
            install,
            _dir: dir,
        }
    }
}

/// A policy whose critical secrets need two approvals and then only `delay` (instead of 15
/// minutes), with the activation task looking every second: approvals end to end in a test.
pub fn quick_approvals(delay: std::time::Duration) -> Policy {
    use agent_secret_control_plane::service::approvals::ApprovalSettings;
    use agent_secret_core::policy::approval::{ApprovalPolicy, Requirement};
    Policy {
        approvals: ApprovalSettings {
            policy: ApprovalPolicy {
                critical: Requirement {
                    approvals: 2,
                    delay,
                },
                ..ApprovalPolicy::default()
            },
            activation_interval: std::time::Duration::from_secs(1),
            ..ApprovalSettings::default()
        },
        ..Policy::default()
    }
}

/// The running system. Fields drop in order: the sidecar, the upstream, the control plane,
/// then the directory that held their files.
pub struct Harness {
    pub sidecar: RunningSidecar,
    pub upstream: Upstream,
    pub tenant: Tenant,
    pub cp: ControlPlane,
    pub install: Install,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            secrets: Vec::new(),
            policy: Policy::default(),
            database: None,
            upstream: None,
            configure: Vec::new(),
            sessions: None,
        }
    }

    /// The tenant's agent asks the control plane for `request`: the API's whole answer
    /// (`status`, `approval_id` when it waits for approval, ...).
    pub async fn request_token(&self, request: AgentToken) -> Value {
        self.cp
            .ok(
                reqwest::Method::POST,
                "/v1/tokens",
                &self.tenant.agent_key,
                Some(serde_json::to_value(&request.0).unwrap()),
            )
            .await
    }

    /// The tenant's agent asks the control plane for `request`.
    pub async fn issue(&self, request: AgentToken) -> Issued {
        let t = self.request_token(request).await;
        Issued {
            id: t["id"].as_str().unwrap().to_owned(),
            token: t["token"].as_str().unwrap().to_owned(),
        }
    }

    /// An agent's HTTP client: the sidecar is its proxy, `token` its proxy credential.
    pub fn agent(&self, token: &Issued) -> reqwest::Client {
        let proxy = reqwest::Proxy::http(format!("http://{}", self.sidecar.proxy_addr()))
            .unwrap()
            .basic_auth("agent", &token.token);
        reqwest::Client::builder().proxy(proxy).build().unwrap()
    }

    /// The upstream's URL for `path` (forward mode: the agent names the real destination).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.upstream.authority())
    }

    /// The tenant's audit events matching `query` (`GET /v1/audit?{query}`).
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        self.tenant.audit(&self.cp, query).await
    }
}
