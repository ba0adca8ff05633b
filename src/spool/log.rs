//! The event log: append-only segment files holding every stored event once.
//!
//! # Format
//! `<spool.dir>/log/<first seq, 20 digits>.seg`, each a run of records:
//!
//! ```text
//! [payload length: u32 LE][CRC32C of the payload: u32 LE][payload]
//! ```
//!
//! The payload is a [`Record`] (see [`Record::encode`]). A segment is
//! rolled once it passes [`SEGMENT_BYTES`]; a batch never spans two
//! segments, so a segment's records are contiguous seqs.
//!
//! # Durability
//! A group commit writes all of its records with one `write` and then
//! `fdatasync`s the file (a new segment also fsyncs the directory). Only
//! then is any request of the batch answered. A failed write or sync cuts
//! the file back to where the batch started, so a later batch never lands
//! after a half-written one.
//!
//! # Recovery
//! [`Log::open`] reads the log from `trusted_end` (the end the catalog last
//! recorded) to its end; what it finds there is put back into the catalog.
//! A torn write is always the last thing written: a record that does not
//! check out (short, wrong CRC, garbage) with nothing intact after it is
//! cut. A damaged record with intact records after it is not a torn write:
//! opening stops with [`LogError::Corrupt`] rather than cut acknowledged
//! events. Before `trusted_end`, a record that fails its CRC on a later read
//! is reported as corrupt, never skipped in silence and never delivered
//! altered.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A segment is closed for appends once it is this long.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Frame header: length and CRC32C.
pub const HEADER: usize = 8;
/// Largest payload accepted when reading: a larger length is corruption.
const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;

/// What a record's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// The decoded payload (JSON text) the envelope is rendered from at delivery.
    Raw = 1,
    /// A rendered envelope (events carried over from the SQLite spool).
    Envelope = 2,
}

/// One stored event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: i64,
    pub received_at_ms: i64,
    pub id: uuid::Uuid,
    pub dedup: u128,
    pub sig: Option<u128>,
    pub family: String,
    pub kind: String,
    pub app_id: String,
    pub resource: Option<String>,
    pub body_kind: BodyKind,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record in {segment} at byte {offset}: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u128(&mut self) -> Option<u128> {
        self.take(16)
            .map(|b| u128::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Record {
    /// Appends the framed record (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        out.push(self.body_kind as u8);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.received_at_ms.to_le_bytes());
        out.extend_from_slice(&self.id.as_u128().to_le_bytes());
        out.extend_from_slice(&self.dedup.to_le_bytes());
        match self.sig {
            Some(sig) => {
                out.push(1);
                out.extend_from_slice(&sig.to_le_bytes());
            }
            None => out.push(0),
        }
        put_str(out, &self.family);
        put_str(out, &self.kind);
        put_str(out, &self.app_id);
        match &self.resource {
            Some(r) => {
                out.push(1);
                put_str(out, r);
            }
            None => out.push(0),
        }
        put_str(out, &self.body);
        let payload = &out[start + HEADER..];
        let len = payload.len() as u32;
        let crc = crc32c::crc32c(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a payload whose CRC already checked out.
    fn decode(payload: &[u8]) -> Option<Record> {
        let mut c = Cursor(payload);
        let body_kind = match c.u8()? {
            1 => BodyKind::Raw,
            2 => BodyKind::Envelope,
            _ => return None,
        };
        let seq = c.i64()?;
        let received_at_ms = c.i64()?;
        let id = uuid::Uuid::from_u128(c.u128()?);
        let dedup = c.u128()?;
        let sig = match c.u8()? {
            0 => None,
            1 => Some(c.u128()?),
            _ => return None,
        };
        let family = c.str()?;
        let kind = c.str()?;
        let app_id = c.str()?;
        let resource = match c.u8()? {
            0 => None,
            1 => Some(c.str()?),
            _ => return None,
        };
        let body = c.str()?;
        if !c.0.is_empty() {
            return None;
        }
        Some(Record {
            seq,
            received_at_ms,
            id,
            dedup,
            sig,
            family,
            kind,
            app_id,
            resource,
            body_kind,
            body,
        })
    }
}

/// Where a record sits: its segment (by first seq), byte offset and framed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub segment: i64,
    pub offset: u64,
    pub len: u32,
}

/// What one frame at an offset turned out to be.
enum Frame {
    Good(Record, u32),
    /// Fewer bytes than a header or than the length says: the file's end.
    Short,
    Bad(String),
}

fn read_frame(bytes: &[u8]) -> Frame {
    if bytes.len() < HEADER {
        return Frame::Short;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
    if len == 0 || len > MAX_PAYLOAD {
        return Frame::Bad(format!("impossible length {len}"));
    }
    let Some(payload) = bytes.get(HEADER..HEADER + len as usize) else {
        return Frame::Short;
    };
    if crc32c::crc32c(payload) != crc {
        return Frame::Bad("checksum mismatch".into());
    }
    match Record::decode(payload) {
        Some(r) => Frame::Good(r, HEADER as u32 + len),
        None => Frame::Bad("undecodable payload".into()),
    }
}

/// Whether the bad frame at the start of `bytes` keeps a plausible length
/// and an intact frame follows it (a damaged record, not a torn tail).
fn followed_by_a_good_frame(bytes: &[u8]) -> bool {
    let Some(len) = bytes.get(0..4) else {
        return false;
    };
    let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
    match bytes.get(HEADER + len..) {
        Some(rest) if !rest.is_empty() => matches!(read_frame(rest), Frame::Good(..)),
        _ => false,
    }
}

/// Decodes a run of whole frames read from `segment` at `offset`.
/// The first bad frame is an error: callers only read acknowledged bytes.
pub fn decode_run(
    segment: i64,
    offset: u64,
    bytes: &[u8],
) -> Result<Vec<(Record, Position)>, LogError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let here = offset + at as u64;
        match read_frame(&bytes[at..]) {
            Frame::Good(r, len) => {
                out.push((
                    r,
                    Position {
                        segment,
                        offset: here,
                        len,
                    },
                ));
                at += len as usize;
            }
            Frame::Short => {
                return Err(corrupt(segment, here, "record cut short".into()));
            }
            Frame::Bad(reason) => return Err(corrupt(segment, here, reason)),
        }
    }
    Ok(out)
}

fn corrupt(segment: i64, offset: u64, reason: String) -> LogError {
    LogError::Corrupt {
        segment: segment_name(segment),
        offset,
        reason,
    }
}

pub fn segment_name(first_seq: i64) -> String {
    format!("{first_seq:020}.seg")
}

/// The log directory inside the spool directory.
pub fn dir_of(spool_dir: &Path) -> PathBuf {
    spool_dir.join("log")
}

/// Segments in `dir` by first seq, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
            out.push(first);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What recovery found at the tail of the log.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records after `trusted_end`, in order: stored but maybe not in the catalog.
    pub tail: Vec<(Record, Position)>,
    /// Bytes cut from the end of the newest segment (a torn, unacknowledged write).
    pub cut_bytes: u64,
}

/// The writable end of the log; owned by the writer thread.
pub struct Log {
    dir: PathBuf,
    /// The newest segment's first seq and file.
    segment: i64,
    file: File,
    /// Its length: where the next batch goes.
    end: u64,
    /// Roll to a new segment past this many bytes.
    segment_bytes: u64,
}

fn open_segment(dir: &Path, first_seq: i64, create: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if create {
        options.create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    options.open(dir.join(segment_name(first_seq)))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Log {
    /// Opens the log in `dir` (created if missing), checks the newest
    /// segment from `trusted` (the catalog's last known record: segment and
    /// end offset) and cuts a torn tail. `next_seq` names a first segment.
    pub fn open(
        dir: &Path,
        trusted: Option<(i64, u64)>,
        next_seq: i64,
    ) -> Result<(Log, Recovered), LogError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let existing = segments(dir)?;
        let mut recovered = Recovered::default();
        let Some(&newest) = existing.last() else {
            let file = open_segment(dir, next_seq, true)?;
            sync_dir(dir)?;
            let log = Log {
                dir: dir.to_owned(),
                segment: next_seq,
                file,
                end: 0,
                segment_bytes: SEGMENT_BYTES,
            };
            return Ok((log, recovered));
        };
        // Segments after the trusted one hold only records the catalog never
        // saw; read each from its start (normally just the newest).
        let (trusted_segment, trusted_end) = trusted.unwrap_or((i64::MIN, 0));
        for &first in existing.iter().filter(|&&s| s >= trusted_segment) {
            let from = if first == trusted_segment {
                trusted_end
            } else {
                0
            };
            let mut file = open_segment(dir, first, false)?;
            let len = file.metadata()?.len();
            if from > len {
                return Err(corrupt(
                    first,
                    len,
                    format!("the catalog knows records up to byte {from}; the file ends at {len}"),
                ));
            }
            let mut bytes = Vec::with_capacity((len - from) as usize);
            file.seek(SeekFrom::Start(from))?;
            file.read_to_end(&mut bytes)?;
            let mut at = 0usize;
            // The first frame that does not check out ends what was written.
            while let Frame::Good(r, n) = read_frame(&bytes[at..]) {
                recovered.tail.push((
                    r,
                    Position {
                        segment: first,
                        offset: from + at as u64,
                        len: n,
                    },
                ));
                at += n as usize;
            }
            let good_end = from + at as u64;
            if at < bytes.len() && followed_by_a_good_frame(&bytes[at..]) {
                // Not a torn write (that is always the last thing written):
                // a damaged record with good ones after it. Cutting would
                // drop acknowledged events; stop and say where.
                return Err(corrupt(
                    first,
                    good_end,
                    "a damaged record followed by intact ones".into(),
                ));
            }
            if good_end < len {
                if first != newest {
                    // A torn write can only be at the very end of the log.
                    return Err(corrupt(
                        first,
                        good_end,
                        "a bad record before the newest segment".into(),
                    ));
                }
                file.set_len(good_end)?;
                file.sync_all()?;
                recovered.cut_bytes = len - good_end;
            }
        }
        let file = open_segment(dir, newest, false)?;
        let end = file.metadata()?.len();
        let log = Log {
            dir: dir.to_owned(),
            segment: newest,
            file,
            end,
            segment_bytes: SEGMENT_BYTES,
        };
        Ok((log, recovered))
    }

    /// Where the next record would go, were it in the current segment.
    pub fn segment(&self) -> i64 {
        self.segment
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rolls segments past `bytes` instead of [`SEGMENT_BYTES`] (a small
    /// `max_size_mb` needs small segments: space returns a segment at a time).
    pub fn with_segment_bytes(mut self, bytes: u64) -> Log {
        self.segment_bytes = bytes.max(1);
        self
    }

    /// Starts a new segment at `first_seq` if the current one is full (and not empty).
    pub fn roll_if_full(&mut self, first_seq: i64) -> std::io::Result<()> {
        if self.end < self.segment_bytes {
            return Ok(());
        }
        self.roll(first_seq)
    }

    /// Starts a new segment at `first_seq` unless the current one is empty.
    pub fn roll(&mut self, first_seq: i64) -> std::io::Result<()> {
        if self.end == 0 {
            return Ok(());
        }
        let file = open_segment(&self.dir, first_seq, true)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.segment = first_seq;
        self.end = 0;
        Ok(())
    }

    /// Writes `framed` (whole records) at the end and syncs it to disk.
    /// Returns the offset it starts at. On any error the file is cut back.
    pub fn append(&mut self, framed: &[u8]) -> std::io::Result<u64> {
        let at = self.end;
        let written = (|| {
            self.file.seek(SeekFrom::Start(at))?;
            self.file.write_all(framed)?;
            self.file.sync_data()
        })();
        match written {
            Ok(()) => {
                self.end = at + framed.len() as u64;
                Ok(at)
            }
            Err(e) => {
                self.cut(at);
                Err(e)
            }
        }
    }

    /// Cuts the current segment back to `at` (a batch that will not be acknowledged).
    pub fn cut(&mut self, at: u64) {
        if let Err(e) = self.file.set_len(at).and_then(|_| self.file.sync_data()) {
            tracing::error!(error = %e, "cannot cut the event log back after a failed write");
        }
        self.end = at;
    }

    /// Bytes in the current segment.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// Reads `len` bytes at `offset` of segment `first_seq`.
pub fn read_at(dir: &Path, first_seq: i64, offset: u64, len: u64) -> Result<Vec<u8>, LogError> {
    let mut file = File::open(dir.join(segment_name(first_seq)))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; len as usize];
    match file.read_exact(&mut bytes) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(corrupt(
            first_seq,
            offset,
            "the segment ends before the record".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Total bytes of all segments.
pub fn size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for first in segments(dir)? {
        total += std::fs::metadata(dir.join(segment_name(first)))?.len();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(seq: i64) -> Record {
        Record {
            seq,
            received_at_ms: 1_700_000_000_000 + seq,
            id: uuid::Uuid::now_v7(),
            dedup: seq as u128 * 7919,
            sig: (seq % 2 == 0).then_some(seq as u128),
            family: "stream".into(),
            kind: "stream_create".into(),
            app_id: "1234567890".into(),
            resource: Some(format!("s{seq}")),
            body_kind: BodyKind::Raw,
            body: format!("{{\"stream_id\":\"s{seq}\",\"n\":{seq}}}"),
        }
    }

    fn write(dir: &Path, records: &[Record]) -> (Log, Vec<u8>) {
        let (mut log, _) = Log::open(dir, None, 1).unwrap();
        let mut framed = Vec::new();
        for r in records {
            r.encode(&mut framed);
        }
        log.append(&framed).unwrap();
        (log, framed)
    }

    #[test]
    fn records_round_trip_through_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (1..=5).map(record).collect();
        let (_, framed) = write(dir.path(), &records);
        let bytes = read_at(dir.path(), 1, 0, framed.len() as u64).unwrap();
        let back: Vec<Record> = decode_run(1, 0, &bytes)
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(back, records);
    }

    /// The last record cut at every byte offset, then the same with garbage
    /// appended: recovery keeps exactly the whole records before it and
    /// cuts the rest, so the next append follows the last good record.
    #[test]
    fn a_torn_last_record_is_cut_at_every_byte_offset_and_garbage_after_it_too() {
        let records: Vec<Record> = (1..=3).map(record).collect();
        let mut whole = Vec::new();
        for r in &records[..2] {
            r.encode(&mut whole);
        }
        let mut last = Vec::new();
        records[2].encode(&mut last);
        for cut in 0..last.len() {
            for garbage in [
                &b""[..],
                b"\x00\x00\x00",
                b"\xff\xff\xff\xff\x01\x02\x03\x04junk",
            ] {
                let dir = tempfile::tempdir().unwrap();
                std::fs::create_dir_all(dir.path()).unwrap();
                let mut bytes = whole.clone();
                bytes.extend_from_slice(&last[..cut]);
                bytes.extend_from_slice(garbage);
                std::fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
                let (log, recovered) = Log::open(dir.path(), None, 1).unwrap();
                let seqs: Vec<i64> = recovered.tail.iter().map(|(r, _)| r.seq).collect();
                assert_eq!(seqs, [1, 2], "cut at {cut}, garbage {garbage:?}");
                assert_eq!(log.end(), whole.len() as u64, "cut at {cut}");
                assert_eq!(
                    std::fs::metadata(dir.path().join(segment_name(1)))
                        .unwrap()
                        .len(),
                    whole.len() as u64
                );
            }
        }
    }

    /// A bit flipped inside an acknowledged (catalogued) record is reported
    /// when it is read, naming the segment and offset; the records around it
    /// still read.
    #[test]
    fn a_flipped_bit_inside_a_middle_record_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (1..=3).map(record).collect();
        let (log, framed) = write(dir.path(), &records);
        drop(log);
        let mut sizes = Vec::new();
        for r in &records {
            let mut one = Vec::new();
            r.encode(&mut one);
            sizes.push(one.len());
        }
        let path = dir.path().join(segment_name(1));
        for bit in [0usize, 3 * 8 + 1, HEADER * 8 + 5, (sizes[1] - 1) * 8 + 7] {
            let mut bytes = framed.clone();
            let at = sizes[0] + bit / 8;
            bytes[at] ^= 1 << (bit % 8);
            std::fs::write(&path, &bytes).unwrap();
            // The catalog knows all three: the middle one is acknowledged.
            let (_, recovered) = Log::open(dir.path(), Some((1, framed.len() as u64)), 4).unwrap();
            assert!(recovered.tail.is_empty());
            let middle = read_at(dir.path(), 1, sizes[0] as u64, sizes[1] as u64).unwrap();
            let err = decode_run(1, sizes[0] as u64, &middle).unwrap_err();
            assert!(
                matches!(&err, LogError::Corrupt { offset, .. } if *offset == sizes[0] as u64),
                "bit {bit}: {err}"
            );
            let first = read_at(dir.path(), 1, 0, sizes[0] as u64).unwrap();
            assert_eq!(decode_run(1, 0, &first).unwrap()[0].0, records[0]);
            let third_at = (sizes[0] + sizes[1]) as u64;
            let third = read_at(dir.path(), 1, third_at, sizes[2] as u64).unwrap();
            assert_eq!(decode_run(1, third_at, &third).unwrap()[0].0, records[2]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), framed.len() as u64);
        }
    }

    /// Past what the catalog knows, a damaged record with intact records
    /// after it is not a torn write: opening refuses to cut them.
    #[test]
    fn a_damaged_record_before_intact_ones_in_the_tail_stops_opening_instead_of_cutting() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (1..=3).map(record).collect();
        let (log, framed) = write(dir.path(), &records);
        drop(log);
        let mut first = Vec::new();
        records[0].encode(&mut first);
        let mut bytes = framed.clone();
        bytes[first.len() + HEADER + 3] ^= 0x04;
        let path = dir.path().join(segment_name(1));
        std::fs::write(&path, &bytes).unwrap();
        let err = Log::open(dir.path(), None, 1).err().expect("refused");
        assert!(
            matches!(&err, LogError::Corrupt { offset, .. } if *offset == first.len() as u64),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn a_full_segment_rolls_to_a_new_file_named_by_its_first_seq() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), None, 1).unwrap();
        log.end = SEGMENT_BYTES;
        log.roll_if_full(42).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), [1, 42]);
        assert_eq!((log.segment(), log.end()), (42, 0));
    }
}
