#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderValue, StatusCode};

use super::*;
use agent_secret_core::api::ErrorCode;

fn request(user_agent: Option<HeaderValue>) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"http://api.example.com/v1", None).unwrap();
    if let Some(ua) = user_agent {
        req.insert_header(USER_AGENT, ua).unwrap();
    }
    req
}

fn ip() -> IpAddr {
    "10.0.0.7".parse().unwrap()
}

#[test]
fn a_refusal_before_the_token_was_read_names_only_the_address_and_agent() {
    let req = request(Some(HeaderValue::from_static("agent-test/1.0")));
    let caller = Caller::new(ip(), &req);
    let denial = Denial::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no route");
    let event = caller.refusal(None, None, &denial, Utc::now());
    assert_eq!(event.token_id, None);
    assert_eq!(event.client_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(event.user_agent.as_deref(), Some("agent-test/1.0"));
    assert_eq!((event.path, event.destination_host), (None, None));
    assert!(!event.success);
    assert_eq!(event.reason.as_deref(), Some("not_found"));
}

#[test]
fn a_refusal_about_a_path_names_the_token_the_path_and_the_destination() {
    let req = request(None);
    let mut caller = Caller::new(ip(), &req);
    let id = Uuid::new_v4();
    caller.token_id = Some(id);
    let destination = Destination::parse("api.example.com").unwrap();
    let path = SecretPath::parse("prod/api/key").unwrap();
    let denial = Denial::from_code(ErrorCode::ScopeDenied, "m");
    let event = caller.refusal(Some(&destination), Some(&path), &denial, Utc::now());
    assert_eq!(event.token_id, Some(id.hyphenated().to_string()));
    assert_eq!(event.path.as_deref(), Some("prod/api/key"));
    assert_eq!(event.destination_host.as_deref(), Some("api.example.com"));
    assert_eq!(event.reason.as_deref(), Some("scope_denied"));
    assert_eq!(event.user_agent, None);
}

#[test]
fn injections_are_one_successful_record_per_path_under_the_grants_token_id() {
    let req = request(Some(HeaderValue::from_static("sdk/2")));
    let caller = Caller::new(ip(), &req);
    let paths = [
        SecretPath::parse("prod/a").unwrap(),
        SecretPath::parse("prod/b").unwrap(),
    ];
    let destination = Destination::parse("127.0.0.1:18080").unwrap();
    let now = Utc::now();
    let events: Vec<_> = caller
        .injections("grant-token-id", paths.iter(), &destination, now)
        .collect();
    assert_eq!(events.len(), 2);
    for (event, path) in events.iter().zip(["prod/a", "prod/b"]) {
        assert_eq!(event.token_id, Some("grant-token-id"));
        assert_eq!(event.client_ip, Some("10.0.0.7"));
        assert_eq!(event.path, Some(path));
        assert_eq!(event.destination_host, Some("127.0.0.1:18080"));
        assert_eq!(event.user_agent, Some("sdk/2"));
        assert!(event.success);
        assert_eq!((event.reason, event.occurred_at), (None, now));
    }
}

#[test]
fn the_user_agent_is_cut_to_512_characters_and_dropped_when_not_visible_ascii() {
    let long = "a".repeat(600);
    let req = request(Some(HeaderValue::from_str(&long).unwrap()));
    let denial = Denial::client_address_unknown();
    let kept = Caller::new(ip(), &req)
        .refusal(None, None, &denial, Utc::now())
        .user_agent
        .unwrap();
    assert_eq!(kept, "a".repeat(512));

    let binary = request(Some(HeaderValue::from_bytes(b"agent\xff").unwrap()));
    let caller = Caller::new(ip(), &binary);
    assert_eq!(caller.user_agent, None);
}

#[test]
fn an_address_is_written_as_std_writes_it() {
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.0.7",
        "1.20.100.255",
        "127.0.0.1",
        "99.100.9.10",
        "::1",
        "::ffff:255.255.255.255",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fe80::1:2",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(IpText::new(ip).as_str(), ip.to_string());
    }
    for n in (0..=u32::MAX).step_by(16_777_259) {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(n));
        assert_eq!(IpText::new(ip).as_str(), ip.to_string());
    }
}
