#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;

fn secret(s: &str) -> SecretString {
    SecretString::new(s.to_owned())
}

fn hasher() -> PasswordHasher {
    PasswordHasher::new(Arc::new(Pepper::generate())).with_cost(4)
}

#[test]
fn short_long_and_common_passwords_are_refused_with_their_reason() {
    let rules = PasswordRules::default();
    #[rustfmt::skip]
    let rows: [(&str, Result<(), PasswordRejected>); 6] = [
        ("correct horse battery staple", Ok(())),
        ("elevenchars", Err(PasswordRejected::TooShort { min: 12 })),
        ("twelve chars", Ok(())),
        // Length counts characters, not bytes.
        ("ééééééééééé", Err(PasswordRejected::TooShort { min: 12 })),
        ("1234567890ab", Ok(())),
        ("qwertyuiop12", Ok(())),
    ];
    for (password, expected) in rows {
        assert_eq!(rules.check(&secret(password)), expected, "{password}");
    }
    let long = "x".repeat(MAX_PASSWORD_CHARS + 1);
    assert_eq!(rules.check(&secret(&long)), Err(PasswordRejected::TooLong));
    let huge = "é".repeat(1 << 20);
    assert_eq!(rules.check(&secret(&huge)), Err(PasswordRejected::TooLong));
    // 1,024 four-byte characters are within the limit.
    let wide = "😀".repeat(MAX_PASSWORD_CHARS);
    assert_eq!(rules.check(&secret(&wide)), Ok(()));

    let lax = PasswordRules { min_chars: 1 };
    for common in [
        "password", "PassWord", "123456", "qwerty", "iloveyou", "trustno1",
    ] {
        assert_eq!(
            lax.check(&secret(common)),
            Err(PasswordRejected::Common),
            "{common}"
        );
    }
}

#[test]
fn the_whole_common_list_is_loaded_and_refused() {
    let lax = PasswordRules { min_chars: 1 };
    let entries: Vec<&str> = COMMON_PASSWORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(entries.len(), 10_000, "the shipped list changed");
    assert!(common_passwords().len() > 9_900);
    for entry in entries {
        assert_eq!(
            lax.check(&secret(entry)),
            Err(PasswordRejected::Common),
            "{entry}"
        );
    }
}

#[test]
fn a_hash_verifies_its_password_and_nothing_else() {
    let hasher = hasher();
    let password = secret("correct horse battery staple");
    let stored = hasher.hash(&password).unwrap();
    assert!(stored.starts_with("$2b$04$"), "{stored}");
    assert!(!stored.contains("correct"));
    assert!(hasher.verify(&password, &stored));
    assert!(!hasher.verify(&secret("correct horse battery stapl"), &stored));
    assert!(!hasher.verify(&secret("Correct horse battery staple"), &stored));
    // Salted: the same password hashes differently each time, and both verify.
    let again = hasher.hash(&password).unwrap();
    assert_ne!(stored, again);
    assert!(hasher.verify(&password, &again));
    // A malformed stored value never matches and never panics.
    for bad in [
        "",
        "$2b$04$",
        "not a hash",
        "$2b$99$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        assert!(!hasher.verify(&password, bad), "{bad:?}");
    }
}

#[test]
fn the_pepper_is_part_of_the_hash() {
    let password = secret("correct horse battery staple");
    let stored = hasher().hash(&password).unwrap();
    // The same password under another server's pepper does not verify: the database alone is
    // not enough to check guesses.
    assert!(!hasher().verify(&password, &stored));
    // Plain bcrypt of the password (no pepper) does not verify either.
    let plain = bcrypt::hash(password.expose(), 4).unwrap();
    let h = hasher();
    assert!(!h.verify(&password, &plain));
}

#[test]
fn production_hashes_use_cost_12() {
    let hasher = PasswordHasher::new(Arc::new(Pepper::generate()));
    let stored = hasher
        .hash(&secret("correct horse battery staple"))
        .unwrap();
    assert!(stored.starts_with("$2b$12$"), "{stored}");
}
