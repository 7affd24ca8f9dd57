//! RFC 3339 timestamps written without `core::fmt`, for the sidecar's audit events.
//!
//! Every injection's audit event carries its time, and chrono's serializer writes it through
//! `core::fmt` (`collect_str`, `write!` per field): ~2,400 instructions of the sidecar's
//! ~147,000 per warm request (bench/results/warm-path-callgrind.md). This writes the same
//! text chrono would (`SecondsFormat::AutoSi`, `Z`) digit by digit into a stack buffer;
//! years outside 0..=9999, which chrono writes with a sign, go through chrono.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Longest text: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// Appends `at` to `out` as a JSON string: the text chrono's `Serialize` writes. For the
/// sidecar's audit encoder, which writes an event's JSON without a serializer.
pub fn push_json(at: &DateTime<Utc>, out: &mut Vec<u8>) {
    let mut buf = [0u8; MAX_LEN];
    if let Some(len) = write(at, &mut buf) {
        out.push(b'"');
        out.extend_from_slice(&buf[..len]);
        out.push(b'"');
        return;
    }
    // A year chrono writes signed; its serializer cannot fail on a `DateTime`, and if it ever
    // did, `null` makes the control plane refuse the event instead of storing a wrong time.
    match serde_json::to_vec(at) {
        Ok(text) => out.extend_from_slice(&text),
        Err(_) => out.extend_from_slice(b"null"),
    }
}

/// Writes `at` into `buf`; the length written, or `None` for a year chrono writes signed.
fn write(at: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let mut nano = at.nanosecond();
    let mut sec = at.second();
    // chrono keeps a leap second as nanoseconds past 1e9 of second 59.
    if nano >= 1_000_000_000 {
        sec += 1;
        nano -= 1_000_000_000;
    }
    let mut w = Cursor { buf, len: 0 };
    w.two(year / 100);
    w.two(year % 100);
    w.byte(b'-');
    w.two(at.month());
    w.byte(b'-');
    w.two(at.day());
    w.byte(b'T');
    w.two(at.hour());
    w.byte(b':');
    w.two(at.minute());
    w.byte(b':');
    w.two(sec);
    // AutoSi: as many digits as the value needs, in groups of three.
    let (value, digits) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (nano / 1_000_000, 3)
    } else if nano.is_multiple_of(1_000) {
        (nano / 1_000, 6)
    } else {
        (nano, 9)
    };
    if digits > 0 {
        w.byte(b'.');
        w.digits(value, digits);
    }
    w.byte(b'Z');
    Some(w.len)
}

struct Cursor<'a> {
    buf: &'a mut [u8; MAX_LEN],
    len: usize,
}

impl Cursor<'_> {
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn two(&mut self, v: u32) {
        self.digits(v, 2);
    }

    /// `v` as exactly `n` decimal digits, zero-padded (written right to left).
    fn digits(&mut self, mut v: u32, n: usize) {
        let end = self.len + n;
        if let Some(slots) = self.buf.get_mut(self.len..end) {
            for slot in slots.iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
            self.len = end;
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    /// What `push_json` appends (after what the buffer already held).
    fn ours(at: &DateTime<Utc>) -> String {
        let mut out = b"x".to_vec();
        push_json(at, &mut out);
        String::from_utf8(out[1..].to_vec()).expect("utf-8")
    }

    fn chronos(at: &DateTime<Utc>) -> String {
        serde_json::to_string(at).expect("serializes")
    }

    #[test]
    fn writes_what_chrono_writes_for_every_precision() {
        let base = Utc
            .with_ymd_and_hms(2026, 12, 5, 23, 4, 9)
            .single()
            .expect("valid");
        for nanos in [
            0u32,
            1,
            999,
            1_000,
            120_000,
            999_000,
            1_000_000,
            5_000_000,
            123_456_789,
            100_000_000,
            999_999_999,
        ] {
            let at = base + chrono::Duration::nanoseconds(i64::from(nanos));
            assert_eq!(ours(&at), chronos(&at), "{nanos} ns");
        }
    }

    #[test]
    fn writes_what_chrono_writes_across_dates() {
        // A spread of instants from year 0 to 9999, with odd nanoseconds.
        let mut seconds: i64 = -62_167_219_200; // 0000-01-01
        let end: i64 = 253_402_300_799; // 9999-12-31T23:59:59
        let mut nanos: u32 = 7;
        while seconds < end {
            let at = Utc.timestamp_opt(seconds, nanos).single().expect("valid");
            assert_eq!(ours(&at), chronos(&at));
            seconds += 86_399 * 97 + 3_607;
            nanos = nanos.wrapping_mul(1_103_515_245).wrapping_add(12_345) % 1_000_000_000;
        }
        let last = Utc.timestamp_opt(end, 999_999_999).single().expect("valid");
        assert_eq!(ours(&last), chronos(&last));
    }

    #[test]
    fn a_leap_second_and_years_chrono_signs() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("valid leap second")
            .and_utc();
        assert_eq!(ours(&leap), chronos(&leap));
        for year in [-1, 10_000] {
            let at = Utc
                .with_ymd_and_hms(year, 1, 1, 0, 0, 0)
                .single()
                .expect("valid");
            assert_eq!(ours(&at), chronos(&at));
        }
    }
}
