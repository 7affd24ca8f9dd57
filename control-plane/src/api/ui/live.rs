//! Live updates for open dashboard pages (`GET /ui/events`, server-sent events): the pending
//! count for the header's badge and the queue, rendered by the same template as the page,
//! whenever either changes. The page's script swaps them in; without it nothing breaks.
//!
//! The stream looks at the session without keeping it alive (`sessions::peek`): an open tab
//! nobody touches still reaches the idle timeout, and the stream ends when the session does
//! (logout, revocation, timeout) with an `ended` event that sends the page to the login form.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use tokio::sync::broadcast;

use super::pages::QueueFragment;
use crate::api::extract::session_cookie;
use crate::events::TenantEvent;
use crate::service::sessions::{self, SessionRef};
use crate::service::App;

/// How often a stream looks again when no event woke it sooner.
const EVERY: Duration = Duration::from_secs(5);

pub async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(cookie) = session_cookie(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Ok(session) = sessions::peek(&app, &cookie).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let state = Watch {
        wake: app.events.subscribe(),
        app,
        cookie,
        session,
        shown: None,
        first: true,
        ended: false,
    };
    Sse::new(stream(state))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
        .into_response()
}

struct Watch {
    app: Arc<App>,
    cookie: String,
    session: SessionRef,
    wake: broadcast::Receiver<TenantEvent>,
    /// The queue as last sent.
    shown: Option<String>,
    first: bool,
    ended: bool,
}

fn stream(state: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut w| async move {
        if w.ended {
            return None;
        }
        loop {
            if !w.first {
                w.wait().await;
            }
            w.first = false;
            if sessions::peek(&w.app, &w.cookie).await.is_err() {
                w.ended = true;
                return Some((Ok(Event::default().event("ended").data("session")), w));
            }
            let fragment = match QueueFragment::of(&w.app, w.session.human.tenant).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "the dashboard's live queue could not be read");
                    continue;
                }
            };
            let html = match fragment.render() {
                Ok(html) => html,
                Err(e) => {
                    tracing::error!(error = %e, "the dashboard's queue failed to render");
                    continue;
                }
            };
            if w.shown.as_deref() == Some(html.as_str()) {
                continue;
            }
            let data = serde_json::json!({"pending": fragment.pending(), "queue": html});
            w.shown = Some(html);
            return Some((
                Ok(Event::default().event("queue").data(data.to_string())),
                w,
            ));
        }
    })
}

impl Watch {
    /// Until the next look: the interval, or sooner when something happens in this tenant.
    async fn wait(&mut self) {
        let tenant = self.session.human.tenant;
        let sleep = tokio::time::sleep(EVERY);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return,
                event = self.wake.recv() => match event {
                    Ok(e) if e.tenant == tenant => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        sleep.as_mut().await;
                        return;
                    }
                },
            }
        }
    }
}
