//! Memory of recently committed dedup keys and ZEGO signatures.
//!
//! Vendor retries and resends arrive within seconds to minutes of the
//! original, so most repeats can be answered from memory — without a trip
//! through the writer thread — once the original is known to be committed.
//! The spool's tables stay the authority: a key that has fallen out of this
//! memory (bounded size, restarts) is still found by the writer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Keys kept per generation; two generations are searched, so between
/// `CAPACITY` and `2 * CAPACITY` of the latest keys are remembered.
const CAPACITY: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub id: Arc<str>,
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

#[derive(Default)]
struct Generation {
    events: HashMap<String, Entry>,
    /// sig_key -> (dedup_key, seen at ms)
    sigs: HashMap<String, (String, i64)>,
}

#[derive(Default)]
pub(crate) struct RecentKeys {
    inner: Mutex<(Generation, Generation)>,
}

impl RecentKeys {
    /// Looks `dedup_key` (and, for ZEGO, `sig_key`) up among keys seen since `window_start`.
    pub fn lookup(&self, dedup_key: &str, sig_key: Option<&str>, window_start: i64) -> Recent {
        let Ok(g) = self.inner.lock() else {
            return Recent::Unknown;
        };
        let (current, previous) = &*g;
        if let Some(sig) = sig_key {
            let seen = current.sigs.get(sig).or_else(|| previous.sigs.get(sig));
            match seen {
                Some((key, at)) if *at >= window_start => {
                    if key != dedup_key {
                        return Recent::ReplayedSignature;
                    }
                }
                // A signature we do not remember must be recorded by the writer.
                _ => return Recent::Unknown,
            }
        }
        let entry = current
            .events
            .get(dedup_key)
            .or_else(|| previous.events.get(dedup_key));
        match entry {
            Some(e) if e.received_at_ms >= window_start => Recent::Duplicate {
                id: e.id.to_string(),
            },
            _ => Recent::Unknown,
        }
    }

    /// Records a committed event (and its signature).
    pub fn stored(&self, dedup_key: &str, sig_key: Option<&str>, id: &str, at_ms: i64) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let current = Self::room(&mut g);
        current.events.insert(
            dedup_key.to_owned(),
            Entry {
                id: Arc::from(id),
                received_at_ms: at_ms,
            },
        );
        if let Some(sig) = sig_key {
            current
                .sigs
                .insert(sig.to_owned(), (dedup_key.to_owned(), at_ms));
        }
    }

    /// Records a signature committed for an existing event (a re-signed repeat).
    pub fn signature(&self, dedup_key: &str, sig_key: &str, at_ms: i64) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let current = Self::room(&mut g);
        current
            .sigs
            .insert(sig_key.to_owned(), (dedup_key.to_owned(), at_ms));
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

    #[test]
    fn a_committed_key_is_a_duplicate_within_the_window_only() {
        let r = RecentKeys::default();
        assert_eq!(r.lookup("k", None, 0), Recent::Unknown);
        r.stored("k", None, "id-1", 1000);
        assert_eq!(
            r.lookup("k", None, 500),
            Recent::Duplicate { id: "id-1".into() }
        );
        assert_eq!(r.lookup("k", None, 1001), Recent::Unknown);
    }

    #[test]
    fn a_known_signature_with_another_payload_is_a_replay() {
        let r = RecentKeys::default();
        r.stored("k1", Some("s1"), "id-1", 1000);
        assert_eq!(
            r.lookup("k1", Some("s1"), 0),
            Recent::Duplicate { id: "id-1".into() }
        );
        assert_eq!(r.lookup("k2", Some("s1"), 0), Recent::ReplayedSignature);
        // A new signature on a known payload must go to the writer to be recorded.
        assert_eq!(r.lookup("k1", Some("s2"), 0), Recent::Unknown);
        r.signature("k1", "s2", 1001);
        assert_eq!(
            r.lookup("k1", Some("s2"), 0),
            Recent::Duplicate { id: "id-1".into() }
        );
    }

    #[test]
    fn memory_is_bounded_but_keeps_the_latest_generation() {
        let r = RecentKeys::default();
        for i in 0..(3 * CAPACITY) {
            r.stored(&format!("k{i}"), None, "id", 1);
        }
        let g = r.inner.lock().unwrap();
        assert!(g.0.events.len() + g.1.events.len() <= 2 * CAPACITY);
        drop(g);
        let last = format!("k{}", 3 * CAPACITY - 1);
        assert!(matches!(r.lookup(&last, None, 0), Recent::Duplicate { .. }));
        assert_eq!(r.lookup("k0", None, 0), Recent::Unknown);
    }
}
