//! What every API command shares: the client for `--server`/`--ca-cert`, id arguments, and
//! printing an answer (verbatim JSON with `--json`, else a human rendering).

use std::io::{self, Write};
use std::str::FromStr;

use serde::de::DeserializeOwned;

use super::api::Reply;
use super::client::ApiClient;
use super::failure::Failure;
use super::output::Output;
use super::GlobalArgs;

/// Where a human rendering writes.
pub(super) type Human<'a> = &'a mut dyn Write;

pub(super) fn client(global: &GlobalArgs) -> Result<ApiClient, Failure> {
    ApiClient::new(&global.server, global.ca_cert.as_deref())
}

/// An id argument: a UUID of the kind the command names.
pub(super) fn checked_id<Id: FromStr>(raw: &str) -> Result<Id, Failure> {
    raw.parse()
        .map_err(|_| Failure::invalid_argument(format!("{raw:?} is not an id (a UUID)")))
}

/// Prints the answer: verbatim with `--json`, else through `human` (or as pretty JSON should
/// the answer not have the expected shape, so a newer server never breaks the older CLI).
pub(super) fn show<T: DeserializeOwned>(
    out: Output,
    reply: &Reply<T>,
    human: impl FnOnce(T, Human<'_>) -> io::Result<()>,
) -> Result<(), Failure> {
    out.emit(reply.doc(), |w| match reply.typed() {
        Some(typed) => human(typed, w),
        None => writeln!(w, "{:#}", reply.doc()),
    })
}
