#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::sync::watch;

use super::*;

/// Polls `next` once: `Some` if a slot was free without waiting.
async fn without_waiting(
    slots: &mut Slots,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Option<Open>> {
    // `timeout` polls its future before its deadline, so a zero timeout is a single poll.
    tokio::time::timeout(Duration::ZERO, slots.next(shutdown))
        .await
        .ok()
}

#[tokio::test]
async fn past_the_cap_the_next_connection_waits_until_one_closes() {
    let metrics = Metrics::new().unwrap();
    let (_stop, mut shutdown) = watch::channel(false);
    let mut slots = Slots::new(2, &metrics);

    let first = slots.next(&mut shutdown).await.expect("room for the first");
    let _second = slots
        .next(&mut shutdown)
        .await
        .expect("room for the second");
    assert_eq!(metrics.agent_connections.get(), 2);
    assert_eq!(metrics.agent_connection_cap_reached.get(), 0);

    assert!(
        without_waiting(&mut slots, &mut shutdown).await.is_none(),
        "a third connection got room past a cap of two"
    );
    assert_eq!(metrics.agent_connection_cap_reached.get(), 1);
    assert_eq!(metrics.agent_connections.get(), 2);

    let waiting = tokio::spawn(async move {
        let open = slots.next(&mut shutdown).await;
        (open, slots, shutdown)
    });
    drop(first);
    let (third, mut slots, mut shutdown) = waiting.await.unwrap();
    assert!(third.is_some(), "a closed connection frees its room");
    assert_eq!(metrics.agent_connections.get(), 2);

    drop(third);
    assert_eq!(metrics.agent_connections.get(), 1);
    assert!(without_waiting(&mut slots, &mut shutdown)
        .await
        .flatten()
        .is_some());
}

#[tokio::test]
async fn a_full_sidecar_stops_waiting_for_room_at_shutdown() {
    let metrics = Metrics::new().unwrap();
    let (stop, mut shutdown) = watch::channel(false);
    let mut slots = Slots::new(1, &metrics);
    let _only = slots.next(&mut shutdown).await.expect("room for one");
    let waiting = tokio::spawn(async move { slots.next(&mut shutdown).await.is_some() });
    stop.send(true).unwrap();
    assert!(
        !waiting.await.unwrap(),
        "shutdown ends the wait with no room"
    );
}
