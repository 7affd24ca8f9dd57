//! `pingora-floor LISTEN UPSTREAM`: the benchmark's floor (bench/README.md). A pingora
//! `ProxyHttp` that sends every request to one upstream with one static `Authorization`
//! header, and nothing else. It is built with the sidecar's pingora version and profile, runs
//! on the same runtime (tokio multi-thread, default workers) and serves connections with the
//! sidecar's own code (`agent_secret_proxy::downstream::serve`: `TCP_NODELAY`, coalesced
//! writes, idle connections waiting outside pingora), so the sidecar's distance to it is what
//! the sidecar's own request handling costs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use agent_secret_proxy::downstream;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use tokio::sync::watch;

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        upstream_request.insert_header("authorization", "Bearer floor-static-credential")
    }
}

/// The sidecar's allocator (proxy/src/main.rs says why), so the floor is built like the sidecar.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = match args.as_slice() {
        [_, listen, upstream] => listen.parse::<SocketAddr>().ok().zip(upstream.parse().ok()),
        _ => None,
    };
    let Some((listen, upstream)) = parsed else {
        eprintln!("usage: pingora-floor LISTEN_ADDR UPSTREAM_ADDR");
        return ExitCode::from(2);
    };
    // `PINGORA_FLOOR_RUNTIME=current-thread`: the runtime-flavour experiment of bench/README.md.
    let mut builder = match std::env::var("PINGORA_FLOOR_RUNTIME").as_deref() {
        Ok("current-thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen, upstream)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let conf = Arc::new(ServerConf::default());
    let app = Arc::new(pingora::proxy::http_proxy(&conf, Floor { upstream }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{}", listener.local_addr()?.port());
    // Never signalled: the floor runs until it is killed.
    let (_stop, shutdown) = watch::channel(false);
    loop {
        let (tcp, _) = listener.accept().await?;
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move { downstream::serve(&app, tcp, &shutdown).await });
    }
}
