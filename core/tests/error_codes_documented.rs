//! The README's "Error codes" table is the public list of codes: it must name every
//! [`ErrorCode`] exactly once, nothing else, and the status the code always comes with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use agent_secret_core::api::ErrorCode;

const README: &str = include_str!("../../README.md");
const BEGIN: &str = "<!-- error-codes:";
const END: &str = "<!-- /error-codes -->";

/// `(code, status cell)` of every row of the table between the markers.
fn documented_rows() -> Vec<(String, String)> {
    let start = README
        .find(BEGIN)
        .expect("README.md has no `<!-- error-codes:` marker");
    let end = README[start..]
        .find(END)
        .map(|i| start + i)
        .expect("README.md has no `<!-- /error-codes -->` marker");
    README[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells[1].trim_matches('`').to_owned();
            (code, cells[2].to_owned())
        })
        .collect()
}

#[test]
fn the_readme_lists_exactly_the_error_codes_of_the_enum() {
    let rows = documented_rows();
    let documented: Vec<&str> = rows.iter().map(|(code, _)| code.as_str()).collect();
    let unique: BTreeSet<&str> = documented.iter().copied().collect();
    assert_eq!(unique.len(), documented.len(), "a code is documented twice");
    let emitted: BTreeSet<&str> = ErrorCode::ALL.iter().map(ErrorCode::as_str).collect();
    let undocumented: Vec<_> = emitted.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&emitted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "README.md error codes differ from ErrorCode::ALL: missing {undocumented:?}, not in the enum {unknown:?}"
    );
}

#[test]
fn the_readme_gives_each_code_the_status_it_is_sent_with() {
    for (code, status) in documented_rows() {
        let code = ErrorCode::parse(&code).unwrap_or_else(|| panic!("unknown code {code}"));
        match code.http_status() {
            Some(expected) => assert_eq!(status, expected.to_string(), "{code}"),
            // A code whose status depends on who answers must say so, not show one number.
            None => assert!(status.parse::<u16>().is_err(), "{code}: {status}"),
        }
    }
}
