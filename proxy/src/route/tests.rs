#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn router(extra: &str) -> Router {
    let text = format!(
        r#"
[control_plane]
url = "https://127.0.0.1:8200"
sidecar_key_file = "k"
[kms]
keyring = "r"
master_key_file = "m"
[[hosts]]
name = "127.0.0.1:18080"
plaintext = true
allow_private = true
[[hosts]]
name = "passthrough.example.com"
pass_through = true
scrub = "headers"
[[routes]]
prefix = "/openai/"
upstream = "https://api.openai.com/"
[[routes]]
prefix = "/openai/beta/"
upstream = "https://beta.openai.com:8443/v2"
[[routes]]
prefix = "/local/"
upstream = "http://127.0.0.1:18080/base/"
{extra}"#
    );
    let config = ProxyConfig::from_toml_str(&text).unwrap();
    config.validate().unwrap();
    Router::new(&config).unwrap()
}

fn forward(target: &str) -> Result<Target, RouteError> {
    let uri: Uri = target.parse().unwrap();
    // pingora keeps only the path in `uri` for absolute-form; mimic that.
    let path_only: Uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .unwrap();
    router("").target(&Method::GET, target.as_bytes(), &path_only)
}

fn routed(path: &str) -> Result<Target, RouteError> {
    router("").target(&Method::POST, path.as_bytes(), &path.parse().unwrap())
}

#[test]
fn forward_mode_originates_tls_by_default() {
    let t = forward("http://api.example.com/v1/x?y=1").unwrap();
    assert_eq!(t.mode, Mode::Forward);
    assert!(t.tls);
    assert_eq!(t.port, 443);
    assert_eq!(t.destination.to_string(), "api.example.com");
    assert_eq!(t.path_and_query.as_str(), "/v1/x?y=1");
    assert_eq!(t.host_header(), "api.example.com");
    assert_eq!(t.sni(), "api.example.com");
}

#[test]
fn forward_mode_keeps_a_non_default_port_in_the_destination() {
    let t = forward("http://API.Example.com:8443/").unwrap();
    assert!(t.tls);
    assert_eq!(t.port, 8443);
    assert_eq!(t.destination.to_string(), "api.example.com:8443");
    assert_eq!(t.host_header(), "api.example.com:8443");
}

#[test]
fn plain_http_only_for_plaintext_hosts() {
    let t = forward("http://127.0.0.1:18080/echo").unwrap();
    assert!(!t.tls);
    assert_eq!(t.port, 18080);
    assert!(t.allow_private());
    // Same IP, another port: no rule, so TLS.
    let t = forward("http://127.0.0.1:18081/echo").unwrap();
    assert!(t.tls);
    assert!(!t.allow_private());
    // An explicit https:// target is TLS even to a plaintext host.
    assert!(forward("https://127.0.0.1:18080/").unwrap().tls);
}

#[test]
fn empty_path_becomes_slash() {
    assert_eq!(
        forward("http://api.example.com")
            .unwrap()
            .path_and_query
            .as_str(),
        "/"
    );
}

#[test]
fn ipv6_literals_keep_brackets_in_host_but_not_in_sni() {
    let t = forward("http://[::1]:9443/x").unwrap();
    assert_eq!(t.destination.to_string(), "[::1]:9443");
    assert_eq!(t.sni(), "::1");
}

#[test]
fn connect_is_refused_naming_route_mode() {
    let err = router("")
        .target(
            &Method::CONNECT,
            b"api.example.com:443",
            &"/".parse().unwrap(),
        )
        .unwrap_err();
    assert_eq!(err, RouteError::Connect);
    assert!(err.to_string().contains("route mode"));
}

#[test]
fn user_info_in_the_target_is_refused_without_echoing_it() {
    let target = b"http://agent:hunter2@api.example.com/x";
    let err = router("")
        .target(&Method::GET, target, &"/x".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, RouteError::BadTarget(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn other_schemes_are_refused() {
    assert!(matches!(
        forward("ftp://example.com/x"),
        Err(RouteError::BadTarget(_))
    ));
}

#[test]
fn route_mode_uses_the_longest_prefix_and_joins_the_base_path() {
    let t = routed("/openai/v1/chat/completions?stream=true").unwrap();
    assert_eq!(t.mode, Mode::Route);
    assert!(t.tls);
    assert_eq!(t.destination.to_string(), "api.openai.com");
    assert_eq!(
        t.path_and_query.as_str(),
        "/v1/chat/completions?stream=true"
    );

    let t = routed("/openai/beta/models").unwrap();
    assert_eq!(t.destination.to_string(), "beta.openai.com:8443");
    assert_eq!(t.port, 8443);
    assert_eq!(t.path_and_query.as_str(), "/v2/models");

    let t = routed("/local/echo").unwrap();
    assert!(!t.tls);
    assert_eq!(t.path_and_query.as_str(), "/base/echo");
}

#[test]
fn origin_form_without_a_route_is_not_found() {
    assert!(matches!(
        routed("/nothing/here"),
        Err(RouteError::NoRoute(_))
    ));
    assert!(matches!(routed("/openai"), Err(RouteError::NoRoute(_))));
}

#[test]
fn pass_through_needs_a_route_or_an_explicit_host_flag() {
    assert!(routed("/openai/v1/models").unwrap().pass_through_allowed());
    assert!(forward("http://passthrough.example.com/")
        .unwrap()
        .pass_through_allowed());
    assert!(!forward("http://api.example.com/")
        .unwrap()
        .pass_through_allowed());
    // A host rule for plaintext/allow_private alone does not open pass-through.
    let t = router("").target(
        &Method::GET,
        b"http://127.0.0.1:18080/",
        &"/".parse().unwrap(),
    );
    assert!(!t.unwrap().pass_through_allowed());
}

#[test]
fn scrub_mode_comes_from_the_host_rule() {
    assert_eq!(
        forward("http://passthrough.example.com/")
            .unwrap()
            .scrub_mode(),
        ScrubMode::Headers
    );
    assert_eq!(
        forward("http://api.example.com/").unwrap().scrub_mode(),
        ScrubMode::Full
    );
}

#[test]
fn route_upstreams_are_validated() {
    for bad in [
        "ftp://x.example.com/",
        "https://user@x.example.com/",
        "https://x.example.com/?q=1",
        "/relative",
    ] {
        assert!(RouteUpstream::parse(bad).is_err(), "{bad} accepted");
    }
    for bad in ["/", "openai/", "/openai", "/a?b/"] {
        assert!(check_prefix(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn route_mode_refuses_dot_segments_that_would_leave_the_base_path() {
    for path in [
        "/local/../x",
        "/local/a/../../x",
        "/local/%2e%2e/x",
        "/local/%2E./x",
        "/local/./x",
    ] {
        assert!(
            matches!(routed(path), Err(RouteError::BadTarget(_))),
            "{path} must be refused"
        );
    }
    assert!(
        routed("/local/a..b/x").is_ok(),
        "dots inside a segment are fine"
    );
}

#[test]
fn a_dot_segment_is_one_or_two_dots_each_maybe_percent_encoded() {
    for dots in [".", "..", "%2e", "%2E", "%2e.", ".%2E", "%2e%2E"] {
        assert!(super::is_dot_segment(dots), "{dots}");
    }
    for other in [
        "",
        "a",
        "...",
        "%2e%2e%2e",
        "%2",
        "%2f",
        ".a",
        "a.",
        "%%2e2e",
        "%2e%2",
        "..%2",
    ] {
        assert!(!super::is_dot_segment(other), "{other}");
    }
}
