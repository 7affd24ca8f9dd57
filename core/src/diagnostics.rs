//! Diagnostics that cannot leak: error locations that do not quote the input, and log targets
//! pinned below the levels at which libraries print requests.
//!
//! A config parser's usual error shows the offending line, and a config line can hold a
//! database URL with its password. Both config loaders report "message (line L, column C)"
//! built from this instead.
//!
//! HTTP and TLS libraries print whole requests and responses (headers included, so a
//! substituted secret or a bearer token) at debug and trace. Both binaries cap these targets
//! at [`PINNED_LOG_TARGETS`] on top of whatever `RUST_LOG` or `[log] level` asks for, so even
//! `RUST_LOG=trace` cannot turn them on.

/// Target prefixes and the most verbose level they may log at, whatever the filter says.
/// A prefix matches every target that starts with it (`pingora` covers `pingora_core`...).
pub const PINNED_LOG_TARGETS: &[(&str, tracing::Level)] = &[
    ("pingora", tracing::Level::INFO),
    ("hyper", tracing::Level::INFO),
    ("h2", tracing::Level::INFO),
    ("http_body", tracing::Level::INFO),
    ("rustls", tracing::Level::INFO),
    ("tokio_rustls", tracing::Level::INFO),
    ("reqwest", tracing::Level::INFO),
    ("tower_http", tracing::Level::INFO),
    ("axum", tracing::Level::INFO),
    ("sqlx", tracing::Level::WARN),
    ("google_cloud", tracing::Level::INFO),
];

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `message`, followed by where in `text` it happened when `offset` is known.
pub fn located(message: &str, text: &str, offset: Option<usize>) -> String {
    match offset {
        Some(offset) => {
            let (line, column) = line_col(text, offset);
            format!("{message} (line {line}, column {column})")
        }
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 3));
        assert_eq!(line_col(text, 1_000), (3, 1));
        assert_eq!(located("bad", text, Some(6)), "bad (line 2, column 1)");
        assert_eq!(located("bad", text, None), "bad");
    }
}
