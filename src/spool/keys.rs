//! The writer's index of dedup keys and ZEGO signatures over their windows.
//!
//! Every unique event needs "have I stored this payload (within
//! `dedup_window_hours`) or seen this signature (within 2 ×
//! `timestamp_tolerance_secs`)?" — almost always "no". A B-tree index
//! answers it with random page writes on every insert (the old spool's
//! largest cost); this index lives in memory and costs one cache line per
//! chunk to say "no":
//!
//! - the newest keys sit in hash maps (the open chunk);
//! - every [`CHUNK`] events the open chunk is sealed into two sorted arrays
//!   of 16-bit fingerprint + 16-bit position (4 bytes per key), each behind
//!   a bloom filter of 16 bits per key: 6 bytes per key in all;
//! - a chunk's signatures are dropped once older than the signature
//!   window, the chunk once older than both windows.
//!
//! A fingerprint match is only a candidate: the writer confirms it against
//! the catalog row of that seq (full 128-bit key and time), so a
//! fingerprint collision can never turn a new event into a duplicate.
//! At open the index is rebuilt from the catalog's rows in the window.

use std::collections::{HashMap, VecDeque};

/// Keys per sealed chunk.
pub const CHUNK: usize = 65_536;

/// A 128-bit key (dedup key or signature key) from its text: the 32 hex
/// digits hookrelay writes, or else a SHA-256 of whatever text it is.
pub fn key128(text: &str) -> u128 {
    if text.len() == 32
        && let Ok(k) = u128::from_str_radix(text, 16)
    {
        return k;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(bytes)
}

/// The 64 bits of a key the index works with. Keys are hashes already;
/// mixing them once more keeps the filter honest for any key.
fn short(key: u128) -> u64 {
    let mut z = (key as u64) ^ ((key >> 64) as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 16-bit fingerprint kept per key in a sealed chunk.
fn fingerprint(k: u64) -> u16 {
    (k >> 48) as u16
}

/// Sorted (fingerprint, position) pairs (4 bytes per key) behind a bloom
/// filter of 16 bits per key (four bits of one word: ≈ 0.3% false passes).
struct Sealed {
    entries: Vec<u32>,
    bloom: Vec<u64>,
}

impl Sealed {
    fn build(keys: impl ExactSizeIterator<Item = (u64, u16)>) -> Sealed {
        let words = (keys.len() / 4).max(1).next_power_of_two();
        let mut bloom = vec![0u64; words];
        let mut entries = Vec::with_capacity(keys.len());
        for (k, pos) in keys {
            let (word, bits) = Self::slot(k, words);
            bloom[word] |= bits;
            entries.push(((fingerprint(k) as u32) << 16) | pos as u32);
        }
        entries.sort_unstable();
        Sealed { entries, bloom }
    }

    /// The word of `key` and the four bits it sets in it.
    fn slot(k: u64, words: usize) -> (usize, u64) {
        let word = (k as usize) & (words - 1);
        let mut bits = 0u64;
        for i in 0..4 {
            bits |= 1 << ((k >> (24 + 6 * i)) & 63);
        }
        (word, bits)
    }

    fn positions(&self, key: u64, out: &mut Vec<u32>) {
        let (word, bits) = Self::slot(key, self.bloom.len());
        if self.bloom[word] & bits != bits {
            return;
        }
        let fp = (fingerprint(key) as u32) << 16;
        let start = self.entries.partition_point(|e| *e < fp);
        for e in &self.entries[start..] {
            if e >> 16 != fp >> 16 {
                break;
            }
            out.push(*e & 0xffff);
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.entries.capacity() * 4 + self.bloom.capacity() * 8
    }
}

struct Chunk {
    first_seq: i64,
    max_at_ms: i64,
    dedup: Sealed,
    /// Dropped once the chunk is older than the signature window.
    sigs: Option<Sealed>,
}

/// The newest keys, by 64 of their bits (a match is a candidate, like a
/// sealed chunk's). Positions are below [`CHUNK`], so they fit 16 bits.
#[derive(Default)]
struct Open {
    first_seq: i64,
    max_at_ms: i64,
    count: usize,
    dedup: HashMap<u64, u16>,
    sigs: HashMap<u64, u16>,
}

/// The index; owned by the writer thread.
#[derive(Default)]
pub struct Keys {
    sealed: VecDeque<Chunk>,
    open: Open,
    /// Signatures of re-signed repeats (not events): sig -> (dedup key, seen at).
    resigned: HashMap<u128, (u128, i64)>,
}

impl Keys {
    /// Records stored event `seq`.
    pub fn insert(&mut self, seq: i64, at_ms: i64, dedup: u128, sig: Option<u128>) {
        if self.open.count == 0 {
            self.open.first_seq = seq;
        }
        let pos = (seq - self.open.first_seq) as u16;
        self.open.count += 1;
        self.open.max_at_ms = self.open.max_at_ms.max(at_ms);
        self.open.dedup.insert(short(dedup), pos);
        if let Some(sig) = sig {
            self.open.sigs.insert(short(sig), pos);
        }
        // Seqs of a chunk span at most CHUNK: positions stay below 2^16.
        if self.open.count >= CHUNK || seq - self.open.first_seq >= CHUNK as i64 - 1 {
            self.seal();
        }
    }

    /// Records a signature used by a repeat of an already stored event.
    pub fn insert_resigned(&mut self, sig: u128, dedup: u128, at_ms: i64) {
        self.resigned.insert(sig, (dedup, at_ms));
    }

    fn seal(&mut self) {
        let open = std::mem::take(&mut self.open);
        let widen = |(k, p): (&u64, &u16)| (*k, *p);
        self.sealed.push_back(Chunk {
            first_seq: open.first_seq,
            max_at_ms: open.max_at_ms,
            dedup: Sealed::build(open.dedup.iter().map(widen)),
            sigs: (!open.sigs.is_empty()).then(|| Sealed::build(open.sigs.iter().map(widen))),
        });
    }

    /// Seqs that may hold `dedup`, newest first.
    pub fn dedup_candidates(&self, dedup: u128) -> Vec<i64> {
        let mut out = Vec::new();
        if let Some(pos) = self.open.dedup.get(&short(dedup)) {
            out.push(self.open.first_seq + *pos as i64);
        }
        let mut found = Vec::new();
        for chunk in self.sealed.iter().rev() {
            found.clear();
            chunk.dedup.positions(short(dedup), &mut found);
            out.extend(found.iter().map(|p| chunk.first_seq + *p as i64));
        }
        out
    }

    /// Seqs of events that may have been signed with `sig`, newest first.
    pub fn sig_candidates(&self, sig: u128) -> Vec<i64> {
        let mut out = Vec::new();
        if let Some(pos) = self.open.sigs.get(&short(sig)) {
            out.push(self.open.first_seq + *pos as i64);
        }
        let mut found = Vec::new();
        for chunk in self.sealed.iter().rev() {
            // None: no signed event in the chunk, or older than the window.
            let Some(sigs) = &chunk.sigs else { continue };
            found.clear();
            sigs.positions(short(sig), &mut found);
            out.extend(found.iter().map(|p| chunk.first_seq + *p as i64));
        }
        out
    }

    /// The dedup key a re-signed repeat used `sig` for, if seen since `since_ms`.
    pub fn resigned(&self, sig: u128, since_ms: i64) -> Option<u128> {
        self.resigned
            .get(&sig)
            .filter(|(_, at)| *at >= since_ms)
            .map(|(k, _)| *k)
    }

    /// Forgets chunks older than both windows, and signatures older than theirs.
    pub fn expire(&mut self, dedup_start: i64, sig_start: i64) {
        let start = dedup_start.min(sig_start);
        while self.sealed.front().is_some_and(|c| c.max_at_ms < start) {
            self.sealed.pop_front();
        }
        for chunk in self.sealed.iter_mut() {
            if chunk.max_at_ms < sig_start {
                chunk.sigs = None;
            }
        }
        self.resigned.retain(|_, (_, at)| *at >= sig_start);
    }

    /// Bytes held by sealed chunks (for tests and the benchmark's notes).
    #[cfg(test)]
    pub fn sealed_bytes(&self) -> usize {
        self.sealed
            .iter()
            .map(|c| c.dedup.bytes() + c.sigs.as_ref().map_or(0, Sealed::bytes))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u64) -> u128 {
        key128(&format!(
            "{:032x}",
            (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        ))
    }

    #[test]
    fn every_inserted_key_is_a_candidate_across_sealed_chunks() {
        let mut keys = Keys::default();
        let n = CHUNK as u64 * 2 + 100;
        for i in 1..=n {
            keys.insert(
                i as i64,
                1_000,
                k(i),
                (i % 3 == 0).then(|| k(i + 1_000_000_000)),
            );
        }
        for i in [1, 2, CHUNK as u64, CHUNK as u64 + 1, n] {
            assert!(
                keys.dedup_candidates(k(i)).contains(&(i as i64)),
                "dedup {i}"
            );
        }
        assert!(keys.sig_candidates(k(3 + 1_000_000_000)).contains(&3));
        // Unknown keys are rarely candidates (bloom, then fingerprint): well
        // under 1% per sealed chunk, each costing one catalog row read.
        let false_hits: usize = (0..10_000u64)
            .map(|i| keys.dedup_candidates(k(10_000_000 + i)).len())
            .sum();
        assert!(false_hits < 200, "{false_hits} false candidates of 10,000");
        assert!(
            keys.sealed_bytes() < 2 * CHUNK * 20,
            "{}",
            keys.sealed_bytes()
        );
    }

    #[test]
    fn chunks_older_than_a_window_are_forgotten() {
        let mut keys = Keys::default();
        for i in 1..=CHUNK as u64 {
            keys.insert(i as i64, 1_000, k(i), Some(k(i + 1_000_000)));
        }
        keys.insert(CHUNK as i64 + 1, 5_000, k(0), None);
        keys.expire(0, 2_000);
        assert!(keys.sig_candidates(k(1 + 1_000_000)).is_empty());
        assert!(!keys.dedup_candidates(k(1)).is_empty());
        keys.expire(2_000, 2_000);
        assert!(keys.dedup_candidates(k(1)).is_empty());
        assert_eq!(keys.dedup_candidates(k(0)), [CHUNK as i64 + 1]);
    }

    /// A chunk without any signed event must not hide older chunks'
    /// signatures that are still inside their window.
    #[test]
    fn a_chunk_without_signatures_does_not_hide_older_ones() {
        let mut keys = Keys::default();
        keys.insert(1, 1_000, k(1), Some(k(1_000_001)));
        for i in 2..=(2 * CHUNK as u64) {
            keys.insert(i as i64, 1_000, k(i), None);
        }
        keys.expire(0, 0);
        assert!(keys.sig_candidates(k(1_000_001)).contains(&1));
    }

    #[test]
    fn text_keys_are_their_hex_value_or_a_hash() {
        assert_eq!(key128(&format!("{:032x}", 5u128)), 5);
        assert_eq!(key128("not-hex"), key128("not-hex"));
        assert_ne!(key128("not-hex"), key128("not-hex2"));
    }
}
