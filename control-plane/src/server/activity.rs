//! Whether a connection is idle: no request in flight (a streamed response body counts until
//! it ends) since some instant. HTTP/2 pings and TCP traffic do not count, so a client cannot
//! keep an unused connection open with them.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::time::Instant;

pub struct Activity {
    in_flight: AtomicUsize,
    /// When the connection opened or its last request ended.
    last_done: Mutex<Instant>,
}

/// One request in flight; ends when dropped.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_done: Mutex::new(Instant::now()),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn last_done(&self) -> Instant {
        // An `Instant` is written whole: a poisoned lock still holds a valid one.
        *self
            .last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once no request has been in flight for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(timeout).await;
                continue;
            }
            let deadline = self.last_done() + timeout;
            if Instant::now() >= deadline {
                // Re-check: a request may have begun while we compared.
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                continue;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request in flight until it is finished or dropped.
pub struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub fn new(body: Body, in_flight: InFlight) -> Tracked {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn a_connection_is_idle_only_once_nothing_has_been_in_flight_for_the_timeout() {
        let activity = Activity::new();
        let request = activity.begin();
        let idle = activity.idle_for(Duration::from_millis(50));
        tokio::pin!(idle);
        // A request in flight keeps it busy however long it takes.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), idle.as_mut())
                .await
                .is_err()
        );
        drop(request);
        tokio::time::timeout(Duration::from_secs(10), idle.as_mut())
            .await
            .expect("idle once the request ended");
    }

    #[tokio::test]
    async fn a_streamed_body_keeps_its_request_in_flight_until_dropped() {
        let activity = Activity::new();
        let body = Tracked::new(Body::from("x"), activity.begin());
        assert_eq!(activity.in_flight.load(Ordering::SeqCst), 1);
        drop(body);
        assert_eq!(activity.in_flight.load(Ordering::SeqCst), 0);
    }
}
