//! Memory of recently stored dedup keys and ZEGO signatures.
//!
//! Vendor retries and resends arrive within seconds to minutes of the
//! original, so most repeats can be answered from memory — without a trip
//! through the writer thread — once the original is known to be durable
//! (its record synced to the log). The writer's key index stays the
//! authority: a key that has fallen out of this memory (bounded size,
//! restarts) is still found by the writer.

use super::Windows;
use std::collections::HashMap;
use std::sync::Mutex;

/// Keys kept per generation; two generations are searched, so between
/// `CAPACITY` and `2 * CAPACITY` of the latest keys are remembered. Vendor
/// retries come within about a minute; a repeat older than this memory is
/// still answered, by the writer's key index (`keys.rs`). 8 Ki keys per
/// generation hold ≈ 3.5 MiB in all; 32 Ki held ≈ 15 MiB of the peak RSS.
const CAPACITY: usize = 8 * 1024;

/// A committed event as remembered: 40 bytes, no allocation of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub id: uuid::Uuid,
    pub received_at_ms: i64,
}

/// What memory says about an incoming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recent {
    /// Committed before under this id (within the window).
    Duplicate { id: String },
    /// This signature was committed with a different payload.
    ReplayedSignature,
    /// Not known here: ask the spool.
    Unknown,
}

/// Dedup and signature keys are 128-bit hashes written as 32 hex digits
/// ([`crate::event::dedup_key`]); memory keeps them as the number, not the
/// text, which cuts the cache to about a fifth of its size as `String`s.
/// Anything else is not cached (and so always asked of the spool).
fn compact(key: &str) -> Option<u128> {
    if key.len() == 32 {
        u128::from_str_radix(key, 16).ok()
    } else {
        None
    }
}

#[derive(Default)]
struct Generation {
    events: HashMap<u128, Entry>,
    /// sig_key -> (dedup_key, seen at ms)
    sigs: HashMap<u128, (u128, i64)>,
}

#[derive(Default)]
pub(crate) struct RecentKeys {
    inner: Mutex<(Generation, Generation)>,
}

impl RecentKeys {
    /// Looks `dedup_key` (and, for ZEGO, `sig_key`) up among keys seen within `windows`.
    pub fn lookup(&self, dedup_key: &str, sig_key: Option<&str>, windows: Windows) -> Recent {
        let Some(dedup) = compact(dedup_key) else {
            return Recent::Unknown;
        };
        let Ok(g) = self.inner.lock() else {
            return Recent::Unknown;
        };
        let (current, previous) = &*g;
        if let Some(sig) = sig_key {
            let Some(sig) = compact(sig) else {
                return Recent::Unknown;
            };
            let seen = current.sigs.get(&sig).or_else(|| previous.sigs.get(&sig));
            match seen {
                Some((key, at)) if *at >= windows.sig_start => {
                    if *key != dedup {
                        return Recent::ReplayedSignature;
                    }
                }
                // A signature we do not remember must be recorded by the writer.
                _ => return Recent::Unknown,
            }
        }
        let entry = current
            .events
            .get(&dedup)
            .or_else(|| previous.events.get(&dedup));
        match entry {
            Some(e) if e.received_at_ms >= windows.dedup_start => Recent::Duplicate {
                id: e.id.to_string(),
            },
            _ => Recent::Unknown,
        }
    }

    /// Records a committed event (and its signature).
    pub fn stored(&self, dedup_key: &str, sig_key: Option<&str>, id: &str, at_ms: i64) {
        let (Some(dedup), Ok(id)) = (compact(dedup_key), uuid::Uuid::parse_str(id)) else {
            return;
        };
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let current = Self::room(&mut g);
        current.events.insert(
            dedup,
            Entry {
                id,
                received_at_ms: at_ms,
            },
        );
        if let Some(sig) = sig_key.and_then(compact) {
            current.sigs.insert(sig, (dedup, at_ms));
        }
    }

    /// Records a signature committed for an existing event (a re-signed repeat).
    pub fn signature(&self, dedup_key: &str, sig_key: &str, at_ms: i64) {
        let (Some(dedup), Some(sig)) = (compact(dedup_key), compact(sig_key)) else {
            return;
        };
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let current = Self::room(&mut g);
        current.sigs.insert(sig, (dedup, at_ms));
    }

    /// The current generation, rotated first when full.
    fn room(g: &mut (Generation, Generation)) -> &mut Generation {
        if g.0.events.len() + g.0.sigs.len() >= CAPACITY {
            g.1 = std::mem::take(&mut g.0);
        }
        &mut g.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: i64) -> Windows {
        Windows {
            dedup_start: start,
            sig_start: start,
        }
    }

    const ID1: &str = "019a0000-0000-7000-8000-000000000001";

    fn key(i: usize) -> String {
        format!("{i:032x}")
    }

    #[test]
    fn a_committed_key_is_a_duplicate_within_the_window_only() {
        let r = RecentKeys::default();
        let k = key(1);
        assert_eq!(r.lookup(&k, None, w(0)), Recent::Unknown);
        r.stored(&k, None, ID1, 1000);
        assert_eq!(
            r.lookup(&k, None, w(500)),
            Recent::Duplicate { id: ID1.into() }
        );
        assert_eq!(r.lookup(&k, None, w(1001)), Recent::Unknown);
    }

    #[test]
    fn a_known_signature_with_another_payload_is_a_replay() {
        let r = RecentKeys::default();
        let (k1, k2, s1, s2) = (key(1), key(2), key(101), key(102));
        r.stored(&k1, Some(&s1), ID1, 1000);
        assert_eq!(
            r.lookup(&k1, Some(&s1), w(0)),
            Recent::Duplicate { id: ID1.into() }
        );
        assert_eq!(r.lookup(&k2, Some(&s1), w(0)), Recent::ReplayedSignature);
        // A new signature on a known payload must go to the writer to be recorded.
        assert_eq!(r.lookup(&k1, Some(&s2), w(0)), Recent::Unknown);
        r.signature(&k1, &s2, 1001);
        assert_eq!(
            r.lookup(&k1, Some(&s2), w(0)),
            Recent::Duplicate { id: ID1.into() }
        );
    }

    #[test]
    fn a_signature_is_remembered_for_its_own_window_not_the_dedup_window() {
        let r = RecentKeys::default();
        let (k1, k2, s1) = (key(1), key(2), key(101));
        r.stored(&k1, Some(&s1), ID1, 1000);
        // Past the dedup window but inside the signature window: still a replay.
        let windows = Windows {
            dedup_start: 2000,
            sig_start: 500,
        };
        assert_eq!(r.lookup(&k2, Some(&s1), windows), Recent::ReplayedSignature);
        // Past both: unknown here, left to the spool.
        let windows = Windows {
            dedup_start: 2000,
            sig_start: 2000,
        };
        assert_eq!(r.lookup(&k2, Some(&s1), windows), Recent::Unknown);
    }

    #[test]
    fn keys_that_are_not_hashes_are_left_to_the_spool() {
        let r = RecentKeys::default();
        r.stored("not-a-hash", None, ID1, 1000);
        assert_eq!(r.lookup("not-a-hash", None, w(0)), Recent::Unknown);
        r.stored(&key(3), None, "not-a-uuid", 1000);
        assert_eq!(r.lookup(&key(3), None, w(0)), Recent::Unknown);
    }

    #[test]
    fn memory_is_bounded_but_keeps_the_latest_generation() {
        let r = RecentKeys::default();
        for i in 0..(3 * CAPACITY) {
            r.stored(&key(i), None, ID1, 1);
        }
        let g = r.inner.lock().unwrap();
        assert!(g.0.events.len() + g.1.events.len() <= 2 * CAPACITY);
        drop(g);
        let last = key(3 * CAPACITY - 1);
        assert!(matches!(
            r.lookup(&last, None, w(0)),
            Recent::Duplicate { .. }
        ));
        assert_eq!(r.lookup(&key(0), None, w(0)), Recent::Unknown);
    }
}
