#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn pepper() -> Pepper {
    Pepper::from_bytes(vec![7u8; 32]).unwrap()
}

#[test]
fn issued_token_has_the_documented_shape() {
    let id = Uuid::now_v7();
    let issued = issue_with_id(CredentialKind::Agent, id, &pepper());
    let token = issued.token.expose();
    assert_eq!(token.len(), CREDENTIAL_LEN);
    assert!(token.starts_with("assa_"));
    assert_eq!(&token[5..37], id.simple().to_string());
    assert_eq!(&token[37..38], "_");
    assert_eq!(&token[81..82], "_");
    assert_eq!(
        &token[82..],
        format!("{:08x}", crc32fast::hash(&token.as_bytes()[..81]))
    );
}

#[test]
fn prefixes_are_distinct() {
    let prefixes: std::collections::HashSet<_> =
        CredentialKind::ALL.iter().map(|k| k.prefix()).collect();
    assert_eq!(prefixes.len(), CredentialKind::ALL.len());
}

#[test]
fn verify_accepts_own_hash_only() {
    let p = pepper();
    let issued = issue(CredentialKind::Token, &p);
    let presented = PresentedCredential::parse(issued.token.expose()).unwrap();
    assert_eq!(presented.kind, CredentialKind::Token);
    assert_eq!(presented.id, issued.id);
    assert!(presented.verify(&p, &issued.hash));
    assert!(!presented.verify(&p, &issued.hash[..31]));
    assert!(!presented.verify(&p, &[0u8; 32]));
    let other = Pepper::from_bytes(vec![8u8; 32]).unwrap();
    assert!(!presented.verify(&other, &issued.hash));
}

#[test]
fn wrong_kind_is_refused() {
    let issued = issue(CredentialKind::Agent, &pepper());
    let err =
        PresentedCredential::parse_kind(CredentialKind::Token, issued.token.expose()).unwrap_err();
    assert_eq!(
        err,
        CredentialError::WrongKind {
            expected: CredentialKind::Token,
            found: CredentialKind::Agent
        }
    );
}

#[test]
fn id_of_kind_decides_as_parse_kind_does() {
    let token = issue(CredentialKind::Token, &pepper());
    let agent = issue(CredentialKind::Agent, &pepper());
    let good = token.token.expose();
    let mut bad_sum = good.to_owned();
    bad_sum.replace_range(82.., "00000000");
    let mut bad_secret = good.to_owned();
    bad_secret.replace_range(40..41, "!");
    for presented in [
        good,
        agent.token.expose(),
        &bad_sum,
        &bad_secret,
        &good[1..],
        "",
    ] {
        assert_eq!(
            PresentedCredential::id_of_kind(CredentialKind::Token, presented),
            PresentedCredential::parse_kind(CredentialKind::Token, presented).map(|p| p.id),
        );
    }
    assert_eq!(
        PresentedCredential::id_of_kind(CredentialKind::Token, good),
        Ok(token.id)
    );
}

#[test]
fn hash_is_bound_to_kind_and_id() {
    let p = pepper();
    let issued = issue(CredentialKind::Agent, &p);
    let token = issued.token.expose();
    // Same secret under another prefix, with a recomputed checksum, must not verify.
    let body = format!("asst_{}", &token[5..81]);
    let forged = format!("{body}_{:08x}", crc32fast::hash(body.as_bytes()));
    let presented = PresentedCredential::parse(&forged).unwrap();
    assert!(!presented.verify(&p, &issued.hash));
}

#[test]
fn nothing_secret_in_debug_or_errors() {
    let p = pepper();
    let issued = issue(CredentialKind::Sidecar, &p);
    let token = issued.token.expose();
    let secret = &token[38..81];
    let presented = PresentedCredential::parse(token).unwrap();
    for shown in [
        format!("{issued:?}"),
        format!("{presented:?}"),
        format!("{p:?}"),
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(format!("{p:?}").contains("REDACTED"));
}

#[test]
fn weak_pepper_is_refused() {
    assert_eq!(
        Pepper::from_bytes(vec![1; 31]).unwrap_err(),
        CredentialError::WeakPepper
    );
    assert_ne!(Pepper::generate().mac(b"x"), Pepper::generate().mac(b"x"));
}

#[test]
fn malformed_inputs() {
    let issued = issue(CredentialKind::Operator, &pepper());
    let token = issued.token.expose();
    let upper = token.to_ascii_uppercase();
    let junk = "x".repeat(CREDENTIAL_LEN);
    let cases = ["", "asst_", &token[..CREDENTIAL_LEN - 1], &upper, &junk];
    for case in cases {
        assert_eq!(
            PresentedCredential::parse(case).unwrap_err(),
            CredentialError::Malformed,
            "{case}"
        );
    }
    let padded = format!(" {}", &token[1..]);
    assert!(PresentedCredential::parse(&padded).is_err());
}

#[test]
fn a_mistyped_secret_or_checksum_fails_the_checksum() {
    let issued = issue(CredentialKind::Agent, &pepper());
    let token = issued.token.expose();
    assert!(PresentedCredential::parse(token).is_ok());
    // One base62 character of the secret changed: still well formed, but not what was issued.
    let at = CREDENTIAL_LEN - 10;
    let swap = |c: u8| if c == b'a' { "b" } else { "a" };
    let typo = format!(
        "{}{}{}",
        &token[..at],
        swap(token.as_bytes()[at]),
        &token[at + 1..]
    );
    assert_eq!(
        PresentedCredential::parse(&typo).unwrap_err(),
        CredentialError::BadChecksum
    );
    // The checksum's last hex digit changed.
    let last = CREDENTIAL_LEN - 1;
    let sum_typo = format!(
        "{}{}",
        &token[..last],
        if token.ends_with('0') { "1" } else { "0" }
    );
    assert_eq!(
        PresentedCredential::parse(&sum_typo).unwrap_err(),
        CredentialError::BadChecksum
    );
}
