#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// RFC 6238 appendix B's SHA-1 seed.
fn rfc_secret() -> TotpSecret {
    TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap()
}

#[test]
fn rfc_6238_vectors_verify_at_their_times() {
    // Appendix B's 8-digit codes, last 6 digits (what a 6-digit authenticator shows).
    for (time, code) in [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_234_567_890, "005924"),
    ] {
        assert_eq!(
            verify(&rfc_secret(), code, time, None),
            Ok(time / 30),
            "{time}"
        );
    }
}

#[test]
fn codes_are_checked_within_one_step_of_skew_and_refused_outside() {
    let secret = rfc_secret();
    let (time, code) = (1_111_111_109, "081804");
    assert_eq!(verify(&secret, code, time + 30, None), Ok(time / 30));
    assert_eq!(verify(&secret, code, time - 30, None), Ok(time / 30));
    assert_eq!(
        verify(&secret, code, time + 60, None),
        Err(TotpRejected::Wrong)
    );
    assert_eq!(
        verify(&secret, "081805", time, None),
        Err(TotpRejected::Wrong)
    );
    // Spaces as apps show them are fine; anything else that is not 6 digits is malformed.
    assert_eq!(verify(&secret, "081 804", time, None), Ok(time / 30));
    let long = "0".repeat(1 << 20);
    for bad in [
        "",
        "08180",
        "0818045",
        "08180a",
        "０８１８０４",
        long.as_str(),
    ] {
        assert_eq!(
            verify(&secret, bad, time, None),
            Err(TotpRejected::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn a_code_is_accepted_once_even_within_its_own_step() {
    let secret = rfc_secret();
    let (time, code) = (1_111_111_109, "081804");
    let step = verify(&secret, code, time, None).unwrap();
    assert_eq!(
        verify(&secret, code, time, Some(step)),
        Err(TotpRejected::Replayed)
    );
    assert_eq!(
        verify(&secret, code, time + 10, Some(step)),
        Err(TotpRejected::Replayed)
    );
    // An older code, still inside the skew window, after a newer one was used: refused too.
    let next = verify(&secret, &code_at(&secret, time + 30), time + 30, Some(step)).unwrap();
    assert_eq!(next, step + 1);
    assert_eq!(
        verify(&secret, code, time + 30, Some(next)),
        Err(TotpRejected::Replayed)
    );
}

fn code_at(secret: &TotpSecret, time: u64) -> String {
    secret.totp("t").unwrap().generate(time).to_string()
}

#[test]
fn secrets_round_trip_through_base32_and_the_enrollment_url() {
    let secret = TotpSecret::generate();
    assert_eq!(secret.as_bytes().len(), 20);
    assert_ne!(secret.as_bytes(), TotpSecret::generate().as_bytes());
    let b32 = secret.to_base32();
    let back = TotpSecret::from_base32(b32.expose()).unwrap();
    assert_eq!(back.as_bytes(), secret.as_bytes());
    let url = secret.enrollment_url("alice").unwrap();
    assert!(
        url.expose().starts_with("otpauth://totp/"),
        "{}",
        url.expose()
    );
    assert!(url.expose().contains(&format!("secret={}", b32.expose())));
    assert!(!format!("{secret:?}").contains(b32.expose()));
    assert_eq!(
        TotpSecret::from_base32("MZXW6").map(|_| ()),
        Err(TotpError::BadSecret),
        "shorter than 128 bits"
    );
    assert_eq!(
        TotpSecret::from_base32("not base32!").map(|_| ()),
        Err(TotpError::BadSecret)
    );
}
