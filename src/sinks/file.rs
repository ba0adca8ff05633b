//! `kind = "file"`: JSON Lines, one envelope per line, appended and fsynced
//! before the batch counts as delivered.
//!
//! At-least-once delivery means a crash between the write and the cursor
//! commit offers the same events again. The sink remembers the ids of the
//! last lines it wrote (read back from the file's tail when it opens it) and
//! skips those, so a restart does not duplicate lines in the common case.
//! A torn last line (a crash mid-write) is terminated before appending, so
//! it never glues onto the next envelope.

use super::{Deliver, Outcome, RetryPolicy, SinkKind};
use crate::spool::StoredEvent;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `kind = "file"`: JSON Lines, one envelope per line, appended.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Defaults to `file-{index}`.
    pub name: Option<String>,
    pub path: PathBuf,
}

impl SinkKind for FileSinkConfig {
    const KIND: &'static str = "file";
    type Sink = FileSink;

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn name_mut(&mut self) -> &mut Option<String> {
        &mut self.name
    }

    fn validate(&mut self, i: usize) -> anyhow::Result<()> {
        if self.path.as_os_str().is_empty() {
            anyhow::bail!("invalid config at `sinks[{i}].path`: must not be empty");
        }
        Ok(())
    }

    fn build(&self, name: &str) -> anyhow::Result<FileSink> {
        Ok(FileSink::new(name, self))
    }
}

/// Ids remembered to skip re-deliveries after a restart.
const RECENT_IDS: usize = 4096;
/// Bytes of the file's tail read back at open to learn the last ids written.
const TAIL_BYTES: u64 = 1 << 20;

pub struct FileSink {
    name: String,
    state: Arc<Mutex<FileState>>,
}

struct FileState {
    path: PathBuf,
    file: Option<File>,
    recent: RecentIds,
}

#[derive(Default)]
struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
    fn push(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > RECENT_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

impl FileSink {
    pub fn new(name: &str, config: &FileSinkConfig) -> FileSink {
        FileSink {
            name: name.to_owned(),
            state: Arc::new(Mutex::new(FileState {
                path: config.path.clone(),
                file: None,
                recent: RecentIds::default(),
            })),
        }
    }
}

impl Deliver for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::LOCAL
    }

    async fn deliver(&mut self, events: Arc<[StoredEvent]>) -> Vec<Outcome> {
        let state = Arc::clone(&self.state);
        let n = events.len();
        let result = tokio::task::spawn_blocking(move || {
            let mut state = state
                .lock()
                .map_err(|_| "file sink state poisoned".to_owned())?;
            state.write(&events)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match result {
            Ok(()) => vec![Outcome::Delivered; n],
            Err(reason) => vec![
                Outcome::Retry {
                    reason,
                    status: None,
                    after: None,
                };
                n
            ],
        }
    }
}

impl FileState {
    fn write(&mut self, events: &[StoredEvent]) -> Result<(), String> {
        if self.file.is_none() {
            let (file, recent) = open_for_append(&self.path)
                .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
            for id in recent {
                self.recent.push(id);
            }
            self.file = Some(file);
        }
        let mut buf = Vec::with_capacity(events.iter().map(|e| e.envelope.len() + 1).sum());
        let mut written = Vec::with_capacity(events.len());
        for e in events {
            if self.recent.contains(&e.id) {
                continue;
            }
            buf.extend_from_slice(e.envelope.as_bytes());
            buf.push(b'\n');
            written.push(e.id.clone());
        }
        if buf.is_empty() {
            return Ok(());
        }
        let result = self.file.as_mut().map_or(Ok(()), |file| {
            file.write_all(&buf)?;
            file.sync_data()
        });
        if let Err(e) = result {
            // Reopen next time: after ENOSPC the handle may hold a partial line.
            self.file = None;
            return Err(format!("cannot write {}: {e}", self.path.display()));
        }
        for id in written {
            self.recent.push(id);
        }
        Ok(())
    }
}

/// Opens `path` for appending; returns the ids of the last lines already in it.
fn open_for_append(path: &Path) -> std::io::Result<(File, Vec<String>)> {
    // Events carry callers' data: owner-only for what we create (a
    // directory or file that already exists keeps its mode).
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let len = file.metadata()?.len();
    let mut ids = Vec::new();
    if len > 0 {
        let start = len.saturating_sub(TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut tail)?;
        let complete = tail.last() == Some(&b'\n');
        let mut lines: Vec<&[u8]> = tail.split(|b| *b == b'\n').collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // probably cut in the middle
        }
        for line in lines {
            if let Some(id) = envelope_id(line) {
                ids.push(id);
            }
        }
        if !complete {
            // A torn line from a crash mid-write: end it so the next envelope starts clean.
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
    }
    Ok((file, ids))
}

fn envelope_id(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_slice::<IdOnly>(line).ok().map(|v| v.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, id: &str) -> StoredEvent {
        StoredEvent {
            seq,
            id: id.to_owned(),
            received_at_ms: 0,
            resource: None,
            envelope: format!("{{\"id\":\"{id}\",\"kind\":\"k\"}}"),
        }
    }

    fn sink(path: &Path) -> FileSink {
        FileSink::new(
            "file-0",
            &FileSinkConfig {
                name: None,
                path: path.to_owned(),
            },
        )
    }

    #[test]
    fn the_path_must_not_be_empty() {
        let mut c: FileSinkConfig = toml::from_str("path = \"\"").unwrap();
        assert_eq!(
            c.validate(2).unwrap_err().to_string(),
            "invalid config at `sinks[2].path`: must not be empty"
        );
        let mut c: FileSinkConfig = toml::from_str("path = \"data/events.jsonl\"").unwrap();
        c.validate(2).unwrap();
        assert!(
            toml::from_str::<FileSinkConfig>("name = \"f\"").is_err(),
            "path is required"
        );
    }

    #[tokio::test]
    async fn appends_one_line_per_envelope_and_skips_ids_already_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let mut s = sink(&path);
        let out = s.deliver(vec![ev(1, "a"), ev(2, "b")].into()).await;
        assert_eq!(out, vec![Outcome::Delivered; 2]);
        // A new sink (as after a restart) re-offered the same events writes nothing twice.
        let mut s = sink(&path);
        let out = s.deliver(vec![ev(2, "b"), ev(3, "c")].into()).await;
        assert_eq!(out, vec![Outcome::Delivered; 2]);
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .filter_map(|l| envelope_id(l.as_bytes()))
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_terminated_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"id\":\"a\"}\n{\"id\":\"b\",\"ki").unwrap();
        let mut s = sink(&path);
        s.deliver(vec![ev(1, "c")].into()).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        assert_eq!(envelope_id(last.as_bytes()).as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn an_unwritable_path_is_retried_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::create_dir(&path).unwrap(); // the path is a directory
        let mut s = sink(&path);
        let out = s.deliver(vec![ev(1, "a")].into()).await;
        assert!(matches!(out[0], Outcome::Retry { .. }), "{out:?}");
        std::fs::remove_dir(&path).unwrap();
        let out = s.deliver(vec![ev(1, "a")].into()).await;
        assert_eq!(out, vec![Outcome::Delivered]);
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"a\""));
    }
}
