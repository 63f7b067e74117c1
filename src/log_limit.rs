//! Warnings at most N a second, the rest counted and reported with the next one: what keeps a
//! flood of bad messages or client errors from flooding the log. A leaf: imports nothing of the
//! crate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

fn unix_second() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// At most `per_second` admissions per wall-clock second; counts the refused ones.
#[derive(Debug)]
pub struct LogRateLimit {
    per_second: u32,
    /// (the second, admitted in it, refused since the last admission)
    state: Mutex<(u64, u32, u64)>,
}

impl LogRateLimit {
    pub fn new(per_second: u32) -> LogRateLimit {
        LogRateLimit {
            per_second,
            state: Mutex::new((0, 0, 0)),
        }
    }

    /// `Some(refused since the last admission)` when this one may be logged.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(unix_second())
    }

    pub fn admit_at(&self, second: u64) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (at, admitted, refused) = &mut *state;
        if *at != second {
            *at = second;
            *admitted = 0;
        }
        if *admitted < self.per_second {
            *admitted += 1;
            Some(std::mem::take(refused))
        } else {
            *refused += 1;
            None
        }
    }
}

/// One warning a second per key (an error code, say), each key counting its own refusals.
#[derive(Debug, Default)]
pub struct LogRateLimits {
    limits: Mutex<HashMap<String, LogRateLimit>>,
}

impl LogRateLimits {
    /// `Some(refused since the last admission)` when a warning for `key` may be logged.
    pub fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, unix_second())
    }

    pub fn admit_at(&self, key: &str, second: u64) -> Option<u64> {
        let mut limits = self.limits.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match limits.get(key) {
            Some(limit) => limit.admit_at(second),
            None => (limits.entry(key.to_string()))
                .or_insert_with(|| LogRateLimit::new(1))
                .admit_at(second),
        }
    }

    /// Keys seen so far.
    pub fn len(&self) -> usize {
        self.limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_admits_then_counts_refusals() {
        let limit = LogRateLimit::new(3);
        let first: Vec<_> = (0..10).map(|_| limit.admit_at(100)).collect();
        assert_eq!(
            first,
            [Some(0), Some(0), Some(0), None, None, None, None, None, None, None]
        );
        assert_eq!(limit.admit_at(101), Some(7), "the next admission reports the 7 refused");
        assert_eq!(limit.admit_at(101), Some(0));
        let off = LogRateLimit::new(0);
        assert_eq!(off.admit_at(5), None);
    }
}
