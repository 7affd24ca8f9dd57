//! Backup file names and retention.
//!
//! Retention deletes only files whose whole name is one this module makes
//! (`agent-secret-store-backup-YYYYMMDDTHHMMSSZ.tar.zst[.age]`), judged by the time in the
//! name, never the file's mtime (a copy or a restore from tape changes it). Whatever else the
//! directory holds is never touched, and the newest backup is kept whatever its age, so a
//! scheduler that stopped succeeding never deletes the last good copy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::BackupError;

const PREFIX: &str = "agent-secret-store-backup-";
const STAMP: &str = "%Y%m%dT%H%M%SZ";
const PLAIN: &str = ".tar.zst";
const ENCRYPTED: &str = ".tar.zst.age";
/// What a backup in progress is called until it is complete.
pub(super) const PARTIAL_SUFFIX: &str = ".partial";

/// The name of a backup made at `at`.
pub fn backup_file_name(at: DateTime<Utc>, encrypted: bool) -> String {
    let suffix = if encrypted { ENCRYPTED } else { PLAIN };
    format!("{PREFIX}{}{suffix}", at.format(STAMP))
}

/// The time in a backup's name, or `None` if this module did not make the name.
pub fn parse_backup_name(name: &str) -> Option<DateTime<Utc>> {
    let rest = name.strip_prefix(PREFIX)?;
    let stamp = rest
        .strip_suffix(ENCRYPTED)
        .or_else(|| rest.strip_suffix(PLAIN))?;
    // Exactly the shape `backup_file_name` writes (chrono alone would accept variants).
    if stamp.len() != 16 {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, STAMP)
        .ok()
        .map(|t| t.and_utc())
}

/// Of `names`, those to delete: ours, older than `retention` at `now`, and not the newest.
pub fn expired(names: &[String], now: DateTime<Utc>, retention: Duration) -> Vec<String> {
    let mut ours: Vec<(DateTime<Utc>, &String)> = names
        .iter()
        .filter_map(|n| parse_backup_name(n).map(|t| (t, n)))
        .collect();
    ours.sort();
    let Some((newest, _)) = ours.last().copied() else {
        return Vec::new();
    };
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = now.checked_sub_signed(retention);
    ours.into_iter()
        .filter(|(t, _)| *t != newest && cutoff.is_some_and(|c| *t < c))
        .map(|(_, n)| n.clone())
        .collect()
}

/// The backups in `dir` by this module's names, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(DateTime<Utc>, PathBuf)>, BackupError> {
    let entries = std::fs::read_dir(dir)
        .map_err(BackupError::io(format!("cannot list {}", dir.display())))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(at) = name.to_str().and_then(parse_backup_name) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            found.push((at, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes the expired backups in `dir`; returns the deleted paths.
pub fn prune(
    dir: &Path,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<Vec<PathBuf>, BackupError> {
    let names: Vec<String> = list(dir)?
        .into_iter()
        .filter_map(|(_, p)| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect();
    let mut deleted = Vec::new();
    for name in expired(&names, now, retention) {
        let path = dir.join(&name);
        std::fs::remove_file(&path)
            .map_err(BackupError::io(format!("cannot delete {}", path.display())))?;
        deleted.push(path);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        let t = at("2026-12-05T20:15:07Z");
        assert_eq!(
            backup_file_name(t, false),
            "agent-secret-store-backup-20261205T201507Z.tar.zst"
        );
        assert_eq!(parse_backup_name(&backup_file_name(t, false)), Some(t));
        assert_eq!(parse_backup_name(&backup_file_name(t, true)), Some(t));
        for other in [
            "agent-secret-store-backup-20261205T201507Z.tar.zst.partial",
            ".agent-secret-store-backup-20261205T201507Z.tar.zst",
            "agent-secret-store-backup-20261205T201507Z.tar.gz",
            "agent-secret-store-backup-2026125T201507Z.tar.zst",
            "agent-secret-store-backup-20261305T201507Z.tar.zst",
            "my-notes.txt",
            "",
        ] {
            assert_eq!(parse_backup_name(other), None, "{other}");
        }
    }

    #[test]
    fn retention_keeps_the_window_and_the_newest() {
        let now = at("2026-12-31T00:00:00Z");
        let name = |s| backup_file_name(at(s), false);
        let names = vec![
            name("2026-11-01T00:00:00Z"),   // 60 days: goes
            name("2026-11-30T23:59:59Z"),   // just over 30 days: goes
            name("2026-12-01T00:00:00Z"),   // exactly 30 days: stays
            name("2026-12-30T00:00:00Z"),   // stays
            "operator-copy.tar.zst".into(), // not ours: stays
            "agent-secret-store-backup-x".into(),
        ];
        let window = Duration::from_secs(30 * 86_400);
        let mut gone = expired(&names, now, window);
        gone.sort();
        assert_eq!(gone, vec![names[0].clone(), names[1].clone()]);

        // All old: every one goes but the newest.
        let old = vec![name("2025-01-01T00:00:00Z"), name("2025-02-01T00:00:00Z")];
        assert_eq!(expired(&old, now, window), vec![old[0].clone()]);
        assert!(expired(&[], now, window).is_empty());
    }

    #[test]
    fn prune_deletes_only_expired_backups_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let now = at("2026-12-31T00:00:00Z");
        let files = [
            backup_file_name(at("2026-10-01T00:00:00Z"), false),
            backup_file_name(at("2026-10-02T00:00:00Z"), true),
            backup_file_name(at("2026-12-20T00:00:00Z"), false),
            "agent-secret-store-backup-20261001T000000Z.tar.zst.partial".into(),
            "keep-me".into(),
        ];
        for f in &files {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let deleted = prune(dir.path(), now, Duration::from_secs(30 * 86_400)).unwrap();
        assert_eq!(deleted.len(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![files[2].clone(), files[3].clone(), files[4].clone()];
        expected.sort();
        assert_eq!(left, expected);
    }
}
