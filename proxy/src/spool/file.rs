//! The on-disk half of the audit spool: a JSON Lines file mirroring the events the control
//! plane has not accepted yet.
//!
//! The in-memory deque is the source of truth and the file its durable copy: appends are
//! written and `fsync`ed at once; events the sink accepted are removed by rewriting the file
//! (temp file, fsync, rename) once per drain, not once per batch. A crash between the sink's
//! acceptance and that rewrite replays those events on restart (at-least-once). The file is
//! created with mode 0600 (it names tokens, client IPs and paths, never secret values).
//!
//! Lines that do not parse at start-up (a torn write from a crash, a format from another
//! version) are moved to `<file>.corrupt` and reported, never silently discarded. Lines that
//! parse are capped like new events (see [`super::bound`]), so a file written before the caps
//! existed — with events too large for the control plane to accept — still drains.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use agent_secret_core::api::SidecarAuditEvent;

use super::bound::Queued;

/// File name used when the configured spool path is a directory.
pub const SPOOL_FILE_NAME: &str = "audit-spool.jsonl";

/// The spool could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit spool {}: {source}", path.display())]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub(crate) struct SpoolFile {
    path: PathBuf,
    file: File,
    entries: VecDeque<Queued>,
    bytes: u64,
    /// The file no longer matches `entries` (events acknowledged, or a write failed).
    needs_rewrite: bool,
    /// Events whose fields were capped while loading.
    truncated_on_load: u64,
}

impl SpoolFile {
    /// Open (creating it 0600 if needed) and load the spool. `path` may name the file or an
    /// existing directory to hold [`SPOOL_FILE_NAME`].
    pub(crate) fn open(path: &Path) -> Result<SpoolFile, SpoolError> {
        let path = if path.is_dir() {
            path.join(SPOOL_FILE_NAME)
        } else {
            path.to_path_buf()
        };
        Self::open_file(&path).map_err(|source| SpoolError { path, source })
    }

    fn open_file(path: &Path) -> io::Result<SpoolFile> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)?;
        }
        let file = open_private(
            path,
            OpenOptions::new().create(true).append(true).read(true),
        )?;
        restrict_permissions(path)?;
        let raw = fs::read(path)?;
        let mut entries = VecDeque::new();
        let mut bytes = 0;
        let mut truncated_on_load = 0;
        let mut corrupt: Vec<&[u8]> = Vec::new();
        for line in raw
            .split(|&b| b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
        {
            match serde_json::from_slice::<SidecarAuditEvent>(line) {
                Ok(event) => {
                    let (queued, truncated) = Queued::capped(&event.borrowed());
                    truncated_on_load += u64::from(truncated);
                    bytes += queued.bytes;
                    entries.push_back(queued);
                }
                Err(_) => corrupt.push(line),
            }
        }
        let torn_tail = !raw.is_empty() && !raw.ends_with(b"\n");
        if !corrupt.is_empty() {
            quarantine(path, &corrupt)?;
        }
        let mut spool = SpoolFile {
            path: path.to_path_buf(),
            file,
            entries,
            bytes,
            needs_rewrite: !corrupt.is_empty() || torn_tail || truncated_on_load > 0,
            truncated_on_load,
        };
        if truncated_on_load > 0 {
            tracing::warn!(
                events = truncated_on_load,
                file = %path.display(),
                "audit spool held events too large to send; capped their fields"
            );
        }
        spool.sync()?;
        Ok(spool)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn truncated_on_load(&self) -> u64 {
        self.truncated_on_load
    }

    /// Add events at the end, durably. On a write error the events are still kept in memory
    /// (and the whole file is rewritten at the next sync), so nothing is lost while we run.
    pub(crate) fn append(&mut self, items: Vec<Queued>) -> io::Result<()> {
        let mut buf = Vec::new();
        for q in &items {
            write_line(&mut buf, q);
        }
        for q in items {
            self.bytes += q.bytes;
            self.entries.push_back(q);
        }
        if self.needs_rewrite {
            return self.sync();
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if written.is_err() {
            self.needs_rewrite = true;
        }
        written
    }

    /// Take the next batch from the front (at most `max_events`, and below the byte limit of
    /// [`super::bound::batch_len`]), for sending. Give back what the sink did not take with
    /// [`put_front`](Self::put_front), and call [`acknowledged`](Self::acknowledged) for what
    /// it accepted or what was dead-lettered.
    pub(crate) fn take_batch(&mut self, max_events: usize) -> Vec<Queued> {
        let n = super::bound::batch_len(&self.entries, max_events);
        self.entries.drain(..n).collect()
    }

    pub(crate) fn put_front(&mut self, items: Vec<Queued>) {
        for q in items.into_iter().rev() {
            self.entries.push_front(q);
        }
    }

    /// Events taken with [`take_batch`](Self::take_batch) left the spool (accepted or
    /// dead-lettered); `bytes` is their size.
    pub(crate) fn acknowledged(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_sub(bytes);
        self.needs_rewrite = true;
    }

    /// Make the file match the events still pending.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.needs_rewrite {
            return Ok(());
        }
        if self.entries.is_empty() {
            self.file.set_len(0)?;
            self.file.sync_all()?;
        } else {
            let tmp = sibling(&self.path, "tmp");
            let mut out = open_private(
                &tmp,
                OpenOptions::new().create(true).write(true).truncate(true),
            )?;
            let mut buf = Vec::with_capacity(usize::try_from(self.bytes).unwrap_or(0));
            for q in &self.entries {
                write_line(&mut buf, q);
            }
            out.write_all(&buf)?;
            out.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            sync_dir(&self.path);
            self.file = open_private(&self.path, OpenOptions::new().append(true).read(true))?;
        }
        self.needs_rewrite = false;
        Ok(())
    }
}

fn write_line(buf: &mut Vec<u8>, q: &Queued) {
    buf.extend_from_slice(&q.json);
    buf.push(b'\n');
}

/// Append unparseable lines to `<file>.corrupt` so an operator can look at them.
fn quarantine(path: &Path, lines: &[&[u8]]) -> io::Result<()> {
    let target = sibling(path, "corrupt");
    let mut f = open_private(&target, OpenOptions::new().create(true).append(true))?;
    for line in lines {
        f.write_all(line)?;
        f.write_all(b"\n")?;
    }
    f.sync_all()?;
    tracing::error!(
        lines = lines.len(),
        file = %target.display(),
        "audit spool had unreadable lines; moved them aside for inspection"
    );
    Ok(())
}

pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
pub(crate) fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600).open(path)
}

#[cfg(not(unix))]
pub(crate) fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options.open(path)
}

#[cfg(unix)]
pub(crate) fn restrict_permissions(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
pub(crate) fn restrict_permissions(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Persist a rename. Best effort: not every platform lets a directory be fsynced.
fn sync_dir(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}
