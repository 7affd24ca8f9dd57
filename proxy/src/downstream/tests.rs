//! [`AgentStream`]'s buffering over a real loopback socket: what the agent's end can read,
//! and when.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{AgentStream, WRITE_BUFFER};

/// The sidecar's end as an `AgentStream`, and the agent's end.
async fn pair() -> (AgentStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (ours, _) = listener.accept().await.unwrap();
    (AgentStream::new(ours), agent)
}

/// Reads exactly `n` bytes (failing after 5 s).
async fn read_n(agent: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), agent.read_exact(&mut buf))
        .await
        .expect("bytes arrive")
        .unwrap();
    buf
}

/// Everything until the sidecar's end closes (failing after 5 s).
async fn read_until_closed(agent: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), agent.read_to_end(&mut all))
        .await
        .expect("closed")
        .unwrap();
    all
}

/// Nothing is readable (the bytes were not sent: loopback delivers a sent byte in
/// microseconds, so 100 ms without one means none was sent).
async fn nothing_sent(agent: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(100), agent.read(&mut byte))
        .await
        .is_err()
}

#[tokio::test]
async fn small_writes_wait_for_a_flush_and_go_out_together() {
    let (mut ours, mut agent) = pair().await;
    ours.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        .await
        .unwrap();
    ours.write_all(b"ok").await.unwrap();
    assert!(nothing_sent(&mut agent).await, "sent before the flush");
    ours.flush().await.unwrap();
    let got = read_n(&mut agent, 40).await;
    assert_eq!(&got[..], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
}

#[tokio::test]
async fn a_write_as_large_as_the_buffer_is_sent_at_once_after_what_was_pending() {
    let (mut ours, mut agent) = pair().await;
    ours.write_all(b"head").await.unwrap();
    let big = vec![b'x'; WRITE_BUFFER];
    ours.write_all(&big).await.unwrap();
    // No flush: both went out, in order.
    let got = read_n(&mut agent, 4 + WRITE_BUFFER).await;
    assert_eq!(&got[..4], b"head");
    assert!(got[4..].iter().all(|&b| b == b'x'));
}

#[tokio::test]
async fn a_held_response_waits_for_release_not_for_flushes() {
    let (mut ours, mut agent) = pair().await;
    ours.hold.store(true, Ordering::Relaxed);
    ours.write_all(b"header").await.unwrap();
    ours.flush().await.unwrap();
    ours.write_all(b"+chunk").await.unwrap();
    ours.flush().await.unwrap();
    assert!(nothing_sent(&mut agent).await, "a held flush was sent");
    ours.release().await.unwrap();
    assert_eq!(read_n(&mut agent, 12).await, b"header+chunk");
    // Released: the next response's flushes are sent again.
    ours.write_all(b"next").await.unwrap();
    ours.flush().await.unwrap();
    assert_eq!(read_n(&mut agent, 4).await, b"next");
}

#[tokio::test]
async fn a_held_response_still_goes_out_when_the_stream_is_dropped() {
    let (mut ours, mut agent) = pair().await;
    ours.hold.store(true, Ordering::Relaxed);
    ours.write_all(b"last words").await.unwrap();
    ours.flush().await.unwrap();
    drop(ours);
    assert_eq!(read_until_closed(&mut agent).await, b"last words");
}

#[tokio::test]
async fn shutdown_sends_what_is_held_then_closes() {
    let (mut ours, mut agent) = pair().await;
    ours.hold.store(true, Ordering::Relaxed);
    ours.write_all(b"bye").await.unwrap();
    ours.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut agent).await, b"bye");
}

#[tokio::test]
async fn a_held_response_goes_out_at_its_last_chunk() {
    let (mut ours, mut agent) = pair().await;
    ours.hold.store(true, Ordering::Relaxed);
    ours.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    ours.flush().await.unwrap();
    ours.write_all(b"2\r\nok\r\n").await.unwrap();
    ours.flush().await.unwrap();
    assert!(nothing_sent(&mut agent).await, "sent before the last chunk");
    ours.write_all(b"0\r\n\r\n").await.unwrap();
    ours.flush().await.unwrap();
    let whole = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    assert_eq!(read_n(&mut agent, whole.len()).await, whole);
}
