//! Property tests for the shared grammars and the credential format: the vectors in
//! `grammar_vectors.rs` pin the examples, these check the rules hold for every input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use agent_secret_core::credential::{
    issue, CredentialKind, Pepper, PresentedCredential, CREDENTIAL_LEN,
};
use agent_secret_core::path::SecretPath;
use agent_secret_core::placeholder::{find_placeholders, substitute};
use agent_secret_core::scope::{Action, Scope};
use proptest::prelude::*;

/// A segment that is valid and not `.`/`..`.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,12}".prop_filter("dot segments are reserved", |s| s != "." && s != "..")
}

fn path_string() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..8).prop_map(|segments| segments.join("/"))
}

fn kind() -> impl Strategy<Value = CredentialKind> {
    prop::sample::select(CredentialKind::ALL.to_vec())
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

proptest! {
    #[test]
    fn valid_paths_round_trip(s in path_string()) {
        let path = SecretPath::parse(&s).unwrap();
        prop_assert_eq!(path.to_string(), s.clone());
        prop_assert_eq!(path.to_string().parse::<SecretPath>().unwrap(), path);
    }

    #[test]
    fn path_parse_never_panics(s in ".{0,80}") {
        let _ = SecretPath::parse(&s);
        let _ = Scope::parse(&s);
    }

    #[test]
    fn literal_scope_covers_exactly_its_path(a in path_string(), b in path_string(), act in action()) {
        let scope = Scope::parse(&format!("secrets:{act}:{a}")).unwrap();
        let pa = SecretPath::parse(&a).unwrap();
        let pb = SecretPath::parse(&b).unwrap();
        prop_assert!(scope.covers(act, &pa));
        prop_assert_eq!(scope.covers(act, &pb), a == b);
    }

    #[test]
    fn double_star_covers_everything_under_its_prefix(
        prefix in path_string(),
        rest in prop::collection::vec(segment(), 0..5),
        other in path_string(),
    ) {
        let scope = Scope::parse(&format!("secrets:read:{prefix}/**")).unwrap();
        let below = std::iter::once(prefix.clone()).chain(rest).collect::<Vec<_>>().join("/");
        prop_assert!(scope.covers(Action::Read, &SecretPath::parse(&below).unwrap()));
        let other_path = SecretPath::parse(&other).unwrap();
        let prefix_path = SecretPath::parse(&prefix).unwrap();
        prop_assert_eq!(
            scope.covers(Action::Read, &other_path),
            other_path.starts_with(&prefix_path)
        );
    }

    #[test]
    fn find_placeholders_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(found) = find_placeholders(&bytes) {
            let out = substitute(&bytes, &found, |_| Some(&b"V"[..])).unwrap();
            prop_assert!(out.len() <= bytes.len());
        }
    }

    #[test]
    fn find_placeholders_never_panics_on_brace_soup(s in "[{}a-z: /*]{0,60}") {
        let _ = find_placeholders(s.as_bytes());
    }

    #[test]
    fn substitution_yields_the_expected_string(
        parts in prop::collection::vec(("[a-zA-Z0-9 ,;=]{0,10}", path_string(), "[ -~]{0,20}"), 1..4),
        tail in "[a-zA-Z0-9 ]{0,10}",
    ) {
        let values: HashMap<SecretPath, Vec<u8>> = parts
            .iter()
            .map(|(_, p, v)| (SecretPath::parse(p).unwrap(), v.clone().into_bytes()))
            .collect();
        let mut header = String::new();
        let mut expected = String::new();
        for (text, p, _) in &parts {
            header.push_str(&format!("{text}{{{{secret:{p}}}}}"));
            let value = &values[&SecretPath::parse(p).unwrap()];
            expected.push_str(text);
            expected.push_str(std::str::from_utf8(value).unwrap());
        }
        header.push_str(&tail);
        expected.push_str(&tail);
        let found = find_placeholders(header.as_bytes()).unwrap();
        prop_assert_eq!(found.len(), parts.len());
        let out = substitute(header.as_bytes(), &found, |p| values.get(p).map(Vec::as_slice)).unwrap();
        prop_assert_eq!(&out[..], expected.as_bytes());
    }

    #[test]
    fn credentials_round_trip(k in kind()) {
        let pepper = Pepper::generate();
        let issued = issue(k, &pepper);
        let presented = PresentedCredential::parse_kind(k, issued.token.expose()).unwrap();
        prop_assert_eq!(presented.id, issued.id);
        prop_assert!(presented.verify(&pepper, &issued.hash));
        prop_assert_eq!(presented.hash(&pepper), issued.hash);
    }

    #[test]
    fn any_single_character_mutation_is_refused(k in kind(), index in 0..CREDENTIAL_LEN, replacement in any::<char>()) {
        let pepper = Pepper::from_bytes(vec![42; 32]).unwrap();
        let issued = issue(k, &pepper);
        let original: Vec<char> = issued.token.expose().chars().collect();
        prop_assume!(original[index] != replacement);
        let mut mutated = original.clone();
        mutated[index] = replacement;
        let mutated: String = mutated.into_iter().collect();
        let accepted = PresentedCredential::parse(&mutated)
            .map(|p| p.verify(&pepper, &issued.hash))
            .unwrap_or(false);
        prop_assert!(!accepted);
    }
}
