//! Starting and stopping a sidecar: the binary and the end-to-end tests use the same code.
//!
//! pingora's `Server::run_forever` owns the process (its own runtimes, signal handling,
//! `exit`), which cannot be embedded in a test. Instead the proxy is pingora's `HttpProxy`
//! driven by our own accept loop on the caller's tokio runtime (the pattern pingora documents
//! for custom accept loops): listeners bind `127.0.0.1:0` in tests and report the real port,
//! and [`RunningSidecar::stop`] ends everything — proxy, admin listener, watch stream, audit
//! delivery — with a grace period for in-flight requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_secret_core::kms::{self, KeyringAccess, OpenError};
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::tls::CaType;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::utils::tls::WrappedX509;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::audit::{Audit, AuditBackend};
use crate::cache::Caches;
use crate::config::{ConfigError, ProxyConfig, UpstreamConfig};
use crate::connection_cap::Slots;
use crate::control_plane::{ClientError, ControlPlane};
use crate::metrics::Metrics;
use crate::proxy::SecretProxy;
use crate::rate_limit::RateLimits;
use crate::resolver::Resolver;
use crate::route::Router;
use crate::spool::{AuditPipeline, SpoolConfig, SpoolError};
use crate::watch::{self as revocations, WatchSettings};

/// Entry point for starting a sidecar.
pub struct Sidecar;

/// A started sidecar. Dropping it without [`stop`](RunningSidecar::stop) leaves its tasks
/// running on the runtime until the runtime ends.
pub struct RunningSidecar {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    /// The MCP endpoint's listener, when `mcp_listen` is set.
    mcp_addr: Option<SocketAddr>,
    metrics: Metrics,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The spool pipeline, when this sidecar owns one (not with a caller-supplied backend).
    audit: Option<AuditPipeline>,
}

/// Why the sidecar could not start. Names files and keys, never secret content.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kms(#[from] OpenError),
    #[error(transparent)]
    ControlPlane(#[from] ClientError),
    #[error("invalid upstream.extra_ca_file: {0}")]
    UpstreamCa(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl Sidecar {
    /// Validate `config`, bind both listeners and start serving on the current tokio runtime.
    /// Audit events go through the spool of `[audit]` to the control plane.
    pub async fn start(config: ProxyConfig) -> Result<RunningSidecar, StartError> {
        Sidecar::start_inner(config, None).await
    }

    /// Like [`start`](Sidecar::start), with audit events going to `audit` instead of the spool.
    pub async fn start_with_audit(
        config: ProxyConfig,
        audit: Arc<dyn AuditBackend>,
    ) -> Result<RunningSidecar, StartError> {
        Sidecar::start_inner(config, Some(audit)).await
    }

    async fn start_inner(
        config: ProxyConfig,
        audit: Option<Arc<dyn AuditBackend>>,
    ) -> Result<RunningSidecar, StartError> {
        // Idempotent: an error only means a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        config.validate()?;
        let metrics = Metrics::new()?;
        let credential = config.credential()?;
        let control_plane = ControlPlane::new(&config.control_plane, &credential, metrics.clone())?;
        drop(credential);
        let (pipeline, audit) = match audit {
            Some(backend) => (None, backend),
            None => {
                let spool = SpoolConfig {
                    path: config.audit.spool_path.clone(),
                    max_bytes: config.audit.max_spool_bytes,
                    batch_size: config.audit.batch_size,
                    flush_interval: Duration::from_millis(config.audit.flush_interval_ms),
                };
                let pipeline = AuditPipeline::start(spool, Arc::new(control_plane.clone()))?;
                let backend: Arc<dyn AuditBackend> = Arc::new(pipeline.clone());
                (Some(pipeline), backend)
            }
        };
        // Open only: a sidecar reads the keyring the control plane created, never makes one.
        let kms = kms::open(config.kms_settings()?, KeyringAccess::OpenExisting).await?;
        let caches = Caches::new(&config.cache);
        let resolver = Resolver::new(control_plane.clone(), kms, caches.clone(), metrics.clone());
        let router = Router::new(&config).map_err(|e| ConfigError::Invalid {
            key: "routes".into(),
            message: e,
        })?;
        let rate_limits = Arc::new(RateLimits::new(&config.rate_limits));
        let audit = Audit::new(audit);
        let proxy = SecretProxy {
            router,
            resolver,
            limits: config.limits,
            rate_limits: rate_limits.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            upstream_ca: upstream_ca(&config.upstream)?,
            upstream_connect_timeout: Duration::from_millis(config.upstream.connect_timeout_ms),
        };
        let proxy_listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin_listen).await?;
        let proxy_addr = local_addr(&proxy_listener, config.listen)?;
        let admin_addr = local_addr(&admin_listener, config.admin_listen)?;
        let mcp_listener = match config.mcp_listen {
            Some(addr) => Some((bind(addr).await?, addr)),
            None => None,
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(accept_loop(
                proxy_listener,
                http_app(proxy),
                Slots::new(config.max_agent_connections, &metrics),
                shutdown_rx.clone(),
                config.shutdown_grace(),
            )),
            tokio::spawn(crate::admin::serve(
                admin_listener,
                metrics.clone(),
                pipeline.clone(),
                shutdown_rx.clone(),
            )),
        ];
        let mut mcp_addr = None;
        if let Some((listener, addr)) = mcp_listener {
            mcp_addr = Some(local_addr(&listener, addr)?);
            let router = crate::mcp::router(proxy_addr, audit.clone()).map_err(|e| {
                ConfigError::Invalid {
                    key: "mcp_listen".into(),
                    message: e.to_string(),
                }
            })?;
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let served = axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the MCP listener failed");
                }
            }));
        }
        tasks.push(tokio::spawn(sweep_rate_limits(
            rate_limits,
            shutdown_rx.clone(),
        )));
        if config.control_plane.watch {
            let settings = WatchSettings {
                idle_timeout: (config.control_plane.watch_idle_timeout_seconds > 0)
                    .then(|| Duration::from_secs(config.control_plane.watch_idle_timeout_seconds)),
                max_backoff: Duration::from_millis(config.control_plane.watch_max_backoff_ms),
            };
            tasks.push(tokio::spawn(revocations::run(
                control_plane,
                caches,
                metrics.clone(),
                settings,
                shutdown_rx,
            )));
        }
        tracing::info!(%proxy_addr, %admin_addr, ?mcp_addr, "sidecar listening");
        Ok(RunningSidecar {
            proxy_addr,
            admin_addr,
            mcp_addr,
            metrics,
            shutdown,
            tasks,
            audit: pipeline,
        })
    }
}

impl RunningSidecar {
    /// Where agents connect (`HTTP_PROXY=http://<proxy_addr>`).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// `/healthz` and `/metrics`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `http://<mcp_addr>/mcp`, when `mcp_listen` is set.
    pub fn mcp_addr(&self) -> Option<SocketAddr> {
        self.mcp_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The audit pipeline, when the sidecar owns one (`Sidecar::start`).
    pub fn audit(&self) -> Option<&AuditPipeline> {
        self.audit.as_ref()
    }

    /// Stop accepting, let in-flight requests finish within the grace period, end every task,
    /// then make one last audit delivery attempt and leave the rest in the spool file.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "sidecar task ended abnormally");
            }
        }
        if let Some(pipeline) = &self.audit {
            pipeline.shutdown().await;
        }
        tracing::info!("sidecar stopped");
    }

    /// Serve until SIGTERM or SIGINT, then [`stop`](Self::stop).
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
        self.stop().await;
        Ok(())
    }
}

/// Start from a config and serve until a signal: what `agent-secret-proxy` does.
pub async fn run(config: ProxyConfig) -> Result<(), StartError> {
    let sidecar = Sidecar::start(config).await?;
    sidecar
        .run_until_signal()
        .await
        .map_err(StartError::Signals)
}

/// The extra CA plus the system roots (a per-peer CA list replaces pingora's default roots,
/// so both go in), or `None` to use pingora's system roots alone.
fn upstream_ca(config: &UpstreamConfig) -> Result<Option<Arc<CaType>>, StartError> {
    let Some(path) = &config.extra_ca_file else {
        return Ok(None);
    };
    let bad = |reason: String| StartError::UpstreamCa(format!("{}: {reason}", path.display()));
    let mut certs = Vec::new();
    for der in agent_secret_core::pem::certificates(path)
        .map_err(|e| StartError::UpstreamCa(e.to_string()))?
    {
        certs.push(
            wrap_certificate(der.to_vec()).ok_or_else(|| bad("not an X.509 certificate".into()))?,
        );
    }
    match pingora::tls::load_native_certs() {
        Ok(native) => certs.extend(
            native
                .iter()
                .filter_map(|der| wrap_certificate(der.to_vec())),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "system roots unavailable; trusting extra_ca_file only")
        }
    }
    Ok(Some(Arc::from(certs)))
}

fn wrap_certificate(der: Vec<u8>) -> Option<WrappedX509> {
    WrappedX509::try_new(der, |raw| {
        X509Certificate::from_der(raw).map(|(_, cert)| cert)
    })
    .ok()
}

fn http_app(proxy: SecretProxy) -> Arc<HttpProxy<SecretProxy>> {
    let conf = Arc::new(ServerConf::default());
    let mut app = pingora::proxy::http_proxy(&conf, proxy);
    // CONNECT reaches `request_filter`, which answers 405 with a JSON body naming route mode.
    let mut options = HttpServerOptions::default();
    options.allow_connect_method_proxying = true;
    app.server_options = Some(options);
    Arc::new(app)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// Accept agent connections until shutdown, then give in-flight ones `grace` to finish.
/// Past `slots`' cap nothing is accepted until a connection ends.
async fn accept_loop(
    listener: TcpListener,
    app: Arc<HttpProxy<SecretProxy>>,
    mut slots: Slots,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Some(open) = slots.next(&mut shutdown).await else {
            break;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::stopped(&mut shutdown) => break,
        };
        match accepted {
            Ok((tcp, _)) => {
                let (app, shutdown) = (app.clone(), shutdown.clone());
                connections.spawn(async move {
                    let _open = open;
                    crate::downstream::serve(&app, tcp, &shutdown).await
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    app.cleanup().await;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "grace period over; closing connections"
        );
        connections.shutdown().await;
    }
}

/// Forget idle rate-limit keys every few seconds, so forged or one-off tokens cannot grow the
/// limiter tables without bound.
async fn sweep_rate_limits(limits: Arc<RateLimits>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => limits.sweep(),
            () = crate::stopped(&mut shutdown) => return,
        }
    }
}
