//! The upstream every target forwards to: a hyper HTTP/1.1 server on one current-thread
//! runtime, so it costs little and the same in every scenario. Two listeners serve the same
//! routes (the sidecar binds one with `scrub = "full"`, the other with `scrub = "headers"`).
//!
//! Routes: `/small` (a fixed 64-byte body), `/1m` (1 MiB of JSON-ish text), `/sse` (one event
//! at once, a second after 20 ms, then the end: a proxy that buffers shows ≥ 20 ms to the first
//! event).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SMALL: &[u8; 64] =
    b"{\"ok\":true,\"model\":\"bench\",\"usage\":{\"tokens\":42},\"pad\":\"xxxxx\"}\n";

/// Binds two listeners, prints `PORT_A PORT_B` on stdout and serves until stdin closes (the
/// runner ended) or it is killed.
pub fn run() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let big = Bytes::from(one_mib());
        let a = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!(
            "{} {}",
            a.local_addr().expect("addr").port(),
            b.local_addr().expect("addr").port()
        );
        let ta = tokio::spawn(serve(a, big.clone()));
        let tb = tokio::spawn(serve(b, big));
        let _ = tokio::join!(ta, tb);
    });
}

fn one_mib() -> Vec<u8> {
    let line = b"{\"id\":\"chatcmpl-bench\",\"choices\":[{\"delta\":{\"content\":\"lorem ipsum dolor sit amet\"}}]}\n";
    line.iter().copied().cycle().take(1 << 20).collect()
}

async fn serve(listener: TcpListener, big: Bytes) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let big = big.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let big = big.clone();
                async move { Ok::<_, Infallible>(respond(req.uri().path(), big)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond(path: &str, big: Bytes) -> Response<Body> {
    // Route prefixes (`/a/`, `/b/`) are stripped by the proxies, but accept them anyway.
    let path = path.rsplit('/').next().unwrap_or_default();
    match path {
        "1m" => bytes_response("application/json", big),
        "sse" => {
            let stream = futures::stream::unfold(0u8, |n| async move {
                match n {
                    0 => Some((
                        Ok::<_, Infallible>(Bytes::from_static(b"data: first\n\n")),
                        1,
                    )),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((Ok(Bytes::from_static(b"data: second\n\n")), 2))
                    }
                    _ => None,
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(stream))
                .expect("static response")
        }
        _ => bytes_response("application/json", Bytes::from_static(SMALL)),
    }
}

fn bytes_response(content_type: &str, body: Bytes) -> Response<Body> {
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("static response")
}
