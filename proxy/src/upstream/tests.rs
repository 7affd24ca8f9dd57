#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_secret_core::host::Destination;
use http::uri::PathAndQuery;
use http::HeaderValue;

use super::*;
use crate::inject::Substituted;
use crate::route::{Mode, Target};

fn admission(destination: &str, tls: bool, port: u16, addr: &str) -> Admission {
    let target = Target {
        mode: Mode::Forward,
        tls,
        port,
        destination: Destination::parse(destination).unwrap(),
        path_and_query: PathAndQuery::from_static("/v1/x?y=1"),
        rule: None,
    };
    Admission::pass_through(target, addr.parse().unwrap())
}

fn sensitive(value: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(value).unwrap();
    value.set_sensitive(true);
    value
}

fn values<'h>(req: &'h RequestHeader, name: &str) -> Vec<&'h str> {
    req.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[test]
fn the_request_goes_out_origin_form_with_the_dialled_host_and_without_the_sidecars_headers() {
    let mut req = RequestHeader::build("GET", b"http://evil.example.com/other?z=2", None).unwrap();
    for (name, value) in [
        ("host", "evil.example.com"),
        ("proxy-authorization", "Bearer asst_x"),
        ("proxy-connection", "keep-alive"),
        ("x-agent-secret-trace", "1"),
        ("accept", "application/json"),
    ] {
        req.append_header(name, value).unwrap();
    }
    rewrite_request(
        &mut req,
        &admission("api.example.com", true, 443, "192.0.2.1:443"),
    )
    .unwrap();
    assert_eq!(req.uri, "/v1/x?y=1");
    assert_eq!(req.raw_path(), b"/v1/x?y=1");
    assert_eq!(values(&req, "host"), ["api.example.com"]);
    for gone in [
        "proxy-authorization",
        "proxy-connection",
        "x-agent-secret-trace",
    ] {
        assert!(req.headers.get(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(values(&req, "accept"), ["application/json"]);
}

#[test]
fn a_non_default_port_is_part_of_the_host_header() {
    let mut req = RequestHeader::build("GET", b"/local/x", None).unwrap();
    req.append_header("host", "127.0.0.1:8080").unwrap();
    let admission = admission("127.0.0.1:18080", false, 18080, "127.0.0.1:18080");
    rewrite_request(&mut req, &admission).unwrap();
    assert_eq!(values(&req, "host"), ["127.0.0.1:18080"]);
}

#[test]
fn substituted_headers_replace_every_value_of_their_name_in_order() {
    let mut req = RequestHeader::build("POST", b"/v1", None).unwrap();
    for (name, value) in [
        ("authorization", "Bearer {{secret:prod/a}}"),
        ("x-multi", "first"),
        ("x-multi", "{{secret:prod/b}}"),
        ("x-plain", "kept"),
    ] {
        req.append_header(name, value).unwrap();
    }
    let mut admission = admission("api.example.com", true, 443, "192.0.2.1:443");
    admission.substituted = vec![
        Substituted {
            name: HeaderName::from_static("authorization"),
            values: vec![sensitive("Bearer sk-a")],
        },
        Substituted {
            name: HeaderName::from_static("x-multi"),
            values: vec![sensitive("first"), sensitive("bee")],
        },
    ];
    rewrite_request(&mut req, &admission).unwrap();
    assert_eq!(values(&req, "authorization"), ["Bearer sk-a"]);
    assert_eq!(values(&req, "x-multi"), ["first", "bee"]);
    assert_eq!(values(&req, "x-plain"), ["kept"]);
    assert!(req.headers["authorization"].is_sensitive());
}

#[test]
fn the_peer_is_the_checked_address_with_sni_from_the_dialled_host() {
    let ca: Arc<CaType> = Arc::from(Vec::new());
    let timeout = Duration::from_millis(1500);
    let tls = peer(
        &admission("api.example.com", true, 443, "192.0.2.1:443"),
        Some(&ca),
        timeout,
    );
    assert_eq!(tls._address.to_string(), "192.0.2.1:443");
    assert!(tls.is_tls());
    assert_eq!(tls.sni, "api.example.com");
    assert_eq!(tls.options.connection_timeout, Some(timeout));
    assert!(Arc::ptr_eq(tls.options.ca.as_ref().unwrap(), &ca));

    let v6 = peer(
        &admission("[2001:db8::1]", true, 443, "[2001:db8::1]:443"),
        None,
        timeout,
    );
    assert_eq!(v6.sni, "2001:db8::1", "SNI carries no brackets");

    let plain = peer(
        &admission("127.0.0.1:18080", false, 18080, "127.0.0.1:18080"),
        Some(&ca),
        timeout,
    );
    assert!(!plain.is_tls());
    assert!(plain.options.ca.is_none(), "no roots for a plaintext peer");
}
