//! How long a scrub set takes to build and how much memory it holds, for a few value shapes.
//! With the sidecar's caches off this build runs for every request, so it is on the cold
//! path (issue 16; figures in `bench/README.md`):
//!
//!     cargo run --release -p agent-secret-proxy --example scrub_build [NAME PREFIX]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use agent_secret_core::path::SecretPath;
use agent_secret_core::secret::SecretBytes;
use agent_secret_proxy::scrub::ScrubSet;

/// Pseudo-random text over `alphabet`, a line break every 65 characters when `lines`.
fn random(len: usize, alphabet: &[u8], lines: bool) -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if lines && i % 65 == 64 {
                '\n'
            } else {
                char::from(alphabet[(x % alphabet.len() as u64) as usize])
            }
        })
        .collect()
}

fn main() {
    let base64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let shapes = [
        (
            "API key, 40 B (the bench's)",
            "sk-bench-7Qm2xV9pL4rT8wZ1cN6bH3jK5dF0gS".to_owned(),
            2000,
        ),
        ("password, 10 B", "hunter2!Zq".to_owned(), 2000),
        ("JWT-like, 300 B", random(300, base64, false), 500),
        ("PEM-like, 4 KiB", random(4096, base64, true), 20),
        (
            "JSON/URL specials, 4 KiB",
            random(4096, b"\"\\<>&% {}[]/?=+", false),
            5,
        ),
    ];
    let path = SecretPath::parse("bench/value").unwrap();
    let only = std::env::args().nth(1).unwrap_or_default();
    for (name, value, rounds) in shapes.into_iter().filter(|s| s.0.starts_with(&only)) {
        let values = [(path.clone(), SecretBytes::new(value.into_bytes()))];
        let start = Instant::now();
        let mut memory = 0;
        for _ in 0..rounds {
            let set = ScrubSet::new(&values).unwrap();
            memory = set.memory_usage();
            std::hint::black_box(set);
        }
        let each = start.elapsed() / rounds;
        println!(
            "{name:<28} {each:>10.1?} per build, {:>8.1} KiB",
            memory as f64 / 1024.0
        );
    }
}
