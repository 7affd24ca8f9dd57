#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn class(s: &str) -> Option<&'static str> {
    forbidden_class(s.parse().unwrap())
}

#[test]
fn internal_ipv4_addresses_are_forbidden() {
    for ip in [
        "127.0.0.1",
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
    ] {
        assert!(class(ip).is_some(), "{ip} allowed");
    }
}

#[test]
fn special_purpose_ipv4_ranges_are_forbidden() {
    for ip in ["192.0.0.8", "198.18.0.1", "198.19.255.254"] {
        assert!(class(ip).is_some(), "{ip} allowed");
    }
    for ip in ["192.0.1.1", "198.17.0.1", "198.20.0.1"] {
        assert_eq!(class(ip), None, "{ip} refused");
    }
}

#[test]
fn public_ipv4_addresses_are_allowed() {
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
        "93.184.216.34",
    ] {
        assert_eq!(class(ip), None, "{ip} refused");
    }
}

#[test]
fn internal_ipv6_addresses_are_forbidden_including_embedded_ipv4() {
    for ip in [
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "::7f00:1",
        "::ffff:0:7f00:1",
        "64:ff9b:1::a00:1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ] {
        assert!(class(ip).is_some(), "{ip} allowed");
    }
}

#[test]
fn public_ipv6_addresses_are_allowed() {
    for ip in [
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ] {
        assert_eq!(class(ip), None, "{ip} refused");
    }
}

#[tokio::test]
async fn literal_addresses_are_checked_without_lookup() {
    let err = checked_address("169.254.169.254", 80, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SSRF guard"), "{err}");
    assert!(err.to_string().contains("link-local"), "{err}");
    let ok = checked_address("127.0.0.2", 8080, true).await.unwrap();
    assert_eq!(ok, "127.0.0.2:8080".parse().unwrap());
}

#[tokio::test]
async fn names_resolving_to_loopback_are_refused() {
    let err = checked_address("localhost", 80, false).await.unwrap_err();
    assert!(matches!(err, SsrfError::Forbidden { .. }), "{err}");
    assert!(checked_address("localhost", 80, true)
        .await
        .unwrap()
        .ip()
        .is_loopback());
}
