//! The per-subject memory of the anomaly rules, each bounded: sliding windows keep one entry
//! per second, address sets at most [`MAX_IPS`], hours 24 counters.

use std::collections::{BTreeSet, VecDeque};

use chrono::{DateTime, Timelike, Utc};

/// Addresses remembered per token; a token seen from more is suspicious anyway, and each new
/// one still alerts (within the cooldown).
const MAX_IPS: usize = 32;

/// A count over a sliding window of whole seconds.
#[derive(Default)]
pub struct Counts {
    seconds: VecDeque<(i64, u64)>,
    total: u64,
}

impl Counts {
    /// Adds `n` at `at`; the total within the `window` seconds ending at `at`.
    pub fn add(&mut self, at: DateTime<Utc>, n: u32, window: u32) -> u64 {
        self.slide(at, n, window).0
    }

    /// [`Counts::add`], and how many left the window. An event older than the latest one
    /// (a sidecar's report arrives after the control plane's own events) counts in the
    /// latest second, which keeps the seconds in order and the memory bounded.
    fn slide(&mut self, at: DateTime<Utc>, n: u32, window: u32) -> (u64, u64) {
        let latest = self.seconds.back().map_or(i64::MIN, |(second, _)| *second);
        let now = at.timestamp().max(latest);
        match self.seconds.back_mut() {
            Some((second, count)) if *second == now => *count += u64::from(n),
            _ => self.seconds.push_back((now, u64::from(n))),
        }
        self.total += u64::from(n);
        let gone = self.evict(now - i64::from(window.max(1)));
        (self.total, gone)
    }

    /// Drops the seconds at or before `edge`; returns how many they held.
    fn evict(&mut self, edge: i64) -> u64 {
        let mut gone = 0;
        while let Some(&(second, count)) = self.seconds.front() {
            if second > edge {
                break;
            }
            gone += count;
            self.seconds.pop_front();
        }
        self.total -= gone;
        gone
    }

    /// Nothing within the window before `now`.
    pub fn idle(&self, now: DateTime<Utc>, window: i64) -> bool {
        self.seconds
            .back()
            .is_none_or(|(second, _)| *second <= now.timestamp() - window)
    }
}

/// The addresses a token was used from.
#[derive(Default)]
pub struct Ips {
    known: Vec<String>,
    pub last_seen: DateTime<Utc>,
}

impl Ips {
    /// Notes a use from `ip`; the addresses known before, when `ip` is new and not the first.
    pub fn see(&mut self, ip: &str, at: DateTime<Utc>) -> Option<String> {
        self.last_seen = self.last_seen.max(at);
        if self.known.iter().any(|k| k == ip) {
            return None;
        }
        let before = (!self.known.is_empty()).then(|| self.known.join(", "));
        if self.known.len() < MAX_IPS {
            self.known.push(ip.to_owned());
        }
        before
    }
}

/// A token's successful reads: the current window, and the total before it.
pub struct ReadHistory {
    first: i64,
    last: DateTime<Utc>,
    recent: Counts,
    older: u64,
}

impl ReadHistory {
    pub fn new(first: DateTime<Utc>) -> ReadHistory {
        ReadHistory {
            first: first.timestamp(),
            last: first,
            recent: Counts::default(),
            older: 0,
        }
    }

    pub fn last_seen(&self) -> DateTime<Utc> {
        self.last
    }

    /// Adds a read at `at`: the reads within the `window` seconds ending at `at`, the average
    /// per window before that, and how many whole windows that average spans.
    pub fn add(&mut self, at: DateTime<Utc>, window: u32) -> (u64, f64, u64) {
        self.last = self.last.max(at);
        let (recent, gone) = self.recent.slide(at, 1, window);
        self.older += gone;
        let window = i64::from(window.max(1));
        let span = (at.timestamp() - window - self.first).max(0);
        let windows = u64::try_from(span / window).unwrap_or(0);
        let baseline = self.older as f64 / windows.max(1) as f64;
        (recent, baseline, windows)
    }
}

/// Distinct days remembered per agent: more than any `min_days` worth setting.
const MAX_DAYS: usize = 64;

/// An agent's successful reads by hour of the day (UTC).
#[derive(Default)]
pub struct AgentHours {
    counts: [u64; 24],
    total: u64,
    /// The latest days it read on (days since the epoch), in any order of arrival.
    days: BTreeSet<i64>,
}

impl AgentHours {
    /// The hour of `at` and the share of earlier reads in it, once the history holds
    /// `min_reads` reads over `min_days` days.
    pub fn share_before(
        &self,
        at: DateTime<Utc>,
        min_reads: u32,
        min_days: u32,
    ) -> Option<(u32, f64, u64)> {
        if self.total < u64::from(min_reads.max(1)) || self.days.len() < min_days as usize {
            return None;
        }
        let hour = at.hour();
        let share = self.counts[hour as usize] as f64 / self.total as f64;
        Some((hour, share, self.total))
    }

    pub fn add(&mut self, at: DateTime<Utc>) {
        self.counts[at.hour() as usize] += 1;
        self.total += 1;
        self.days.insert(at.timestamp().div_euclid(86_400));
        if self.days.len() > MAX_DAYS {
            self.days.pop_first();
        }
    }
}
