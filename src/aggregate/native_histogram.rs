//! Native (exponential, sparse) histogram buckets, as Prometheus defines them: at schema `s`,
//! bucket `i` holds the values in `(2^((i-1)/2^s), 2^(i/2^s)]`, so each bucket is `2^(2^-s)`
//! wide (0.54% at schema 7, 1.09% at 6) and sums exactly with another replica's. Only the
//! buckets that were hit are kept. When a histogram holds more than its cap, its schema is
//! lowered by one (pairs of buckets merge, each twice as wide), as Prometheus's client libraries
//! do, so that its memory stays bounded whatever the spread of the values.

use std::sync::OnceLock;

/// The lowest schema Prometheus accepts: a histogram never coarsens past it.
const MIN_SCHEMA: i8 = -4;
/// The highest schema Prometheus accepts.
pub const MAX_SCHEMA: i8 = 8;

/// How native buckets are kept: the finest schema, and at most how many buckets before it
/// coarsens. `None` in the settings: native histograms are off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeSettings {
    pub schema: i8,
    pub max_buckets: usize,
}

/// The buckets of one histogram.
#[derive(Debug, Clone, Default)]
pub struct NativeBuckets {
    /// The schema the buckets are at; `None`: native buckets are off.
    schema: Option<i8>,
    /// Observations of zero (and below the smallest normal float).
    zero_count: u64,
    /// `(index, count)`, by index.
    buckets: Vec<(i32, u64)>,
}

impl NativeBuckets {
    pub fn new(settings: Option<NativeSettings>) -> NativeBuckets {
        NativeBuckets {
            schema: settings.map(|s| s.schema),
            ..NativeBuckets::default()
        }
    }

    /// Counts `value` (non-negative, finite).
    pub fn observe(&mut self, value: f64, settings: Option<NativeSettings>) {
        let (Some(schema), Some(settings)) = (self.schema, settings) else {
            return;
        };
        if value < f64::MIN_POSITIVE {
            self.zero_count += 1;
            return;
        }
        let mut index = index(value, settings.schema);
        for _ in schema..settings.schema {
            index = coarser(index);
        }
        match self.buckets.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.buckets[at].1 += 1,
            Err(at) => {
                self.buckets.insert(at, (index, 1));
                if self.buckets.len() > settings.max_buckets {
                    self.coarsen();
                }
            }
        }
    }

    /// Lowers the schema until the buckets fit again (or the schema cannot go lower).
    fn coarsen(&mut self) {
        let Some(mut schema) = self.schema else { return };
        let cap = self.buckets.len() - 1;
        while self.buckets.len() > cap && schema > MIN_SCHEMA {
            schema -= 1;
            let mut merged: Vec<(i32, u64)> = Vec::with_capacity(self.buckets.len() / 2 + 1);
            for &(index, count) in &self.buckets {
                let index = coarser(index);
                match merged.last_mut() {
                    Some((last, total)) if *last == index => *total += count,
                    _ => merged.push((index, count)),
                }
            }
            self.buckets = merged;
        }
        self.buckets.shrink_to_fit();
        self.schema = Some(schema);
    }

    /// The schema of the buckets (0 when native buckets are off).
    pub fn schema(&self) -> i32 {
        self.schema.map_or(0, i32::from)
    }

    pub fn is_on(&self) -> bool {
        self.schema.is_some()
    }

    /// Values up to this count in the zero bucket.
    pub fn zero_threshold(&self) -> f64 {
        f64::MIN_POSITIVE
    }

    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// `(index, count)` of every bucket hit, by index.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.buckets.iter().copied()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(i32, u64)>()
    }
}

/// The bucket of the schema one lower that bucket `index` falls in: `ceil(index / 2)`.
fn coarser(index: i32) -> i32 {
    (index + 1).div_euclid(2)
}

/// The index of the bucket that holds `value` (positive, normal) at `schema` (0 to 8), computed
/// as Prometheus's Go client does: from the value's binary fraction and exponent, so that a
/// value on a bucket's upper bound is in that bucket.
fn index(value: f64, schema: i8) -> i32 {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1022;
    // value = fraction * 2^exponent, fraction in [0.5, 1).
    let fraction = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    if schema <= 0 {
        let key = if fraction == 0.5 { exponent - 1 } else { exponent };
        return key;
    }
    let bounds = bounds(schema);
    let j = bounds.partition_point(|&b| b < fraction) as i32;
    j + (exponent - 1) * (1 << schema)
}

/// The upper bounds of the fractions' buckets in one octave at `schema` (1 to 8):
/// `2^(j/2^schema - 1)`.
fn bounds(schema: i8) -> &'static [f64] {
    static TABLES: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        (0..=MAX_SCHEMA)
            .map(|s| {
                let n = 1u32 << s;
                (0..n).map(|j| (f64::from(j) / f64::from(n) - 1.0).exp2()).collect()
            })
            .collect()
    });
    &tables[schema.clamp(0, MAX_SCHEMA) as usize]
}

/// The upper bound of bucket `index` at `schema`.
pub fn upper_bound(index: i32, schema: i32) -> f64 {
    (f64::from(index) * (-f64::from(schema)).exp2()).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(schema: i8, max_buckets: usize) -> Option<NativeSettings> {
        Some(NativeSettings { schema, max_buckets })
    }

    #[test]
    fn a_value_falls_in_the_bucket_whose_bounds_hold_it() {
        for schema in 0..=MAX_SCHEMA {
            for value in [1.0, 1.5, 2.0, 0.001, 3.7, 60.0, 86_400.0, 1e-6, 123_456.789] {
                let i = index(value, schema);
                let (low, high) = (upper_bound(i - 1, schema.into()), upper_bound(i, schema.into()));
                assert!(
                    low < value * (1.0 + 1e-12) && value <= high * (1.0 + 1e-12),
                    "schema {schema}: {value} in bucket {i} = ({low}, {high}]"
                );
            }
        }
        assert_eq!(index(1.0, 3), 0, "1 is the upper bound of bucket 0");
        assert_eq!(index(2.0, 0), 1);
    }

    #[test]
    fn too_many_buckets_coarsen_the_schema_and_keep_every_count() {
        let s = settings(8, 20);
        let mut h = NativeBuckets::new(s);
        let values: Vec<f64> = (0..1000).map(|i| 0.01 * 1.01f64.powi(i)).collect();
        for v in &values {
            h.observe(*v, s);
        }
        h.observe(0.0, s);
        assert!(h.buckets().count() <= 20, "{}", h.buckets().count());
        assert!(h.schema() < 8);
        assert_eq!(h.buckets().map(|(_, c)| c).sum::<u64>(), 1000);
        assert_eq!(h.zero_count(), 1);
        // Every value is still in the bucket its bounds say, at the coarser schema.
        let schema = h.schema();
        for v in &values {
            let i = index(*v, 8);
            let mut j = i;
            for _ in schema..8 {
                j = coarser(j);
            }
            assert!(h.buckets().any(|(k, _)| k == j));
        }
    }

    #[test]
    fn off_keeps_nothing() {
        let mut h = NativeBuckets::new(None);
        h.observe(1.0, None);
        assert!(!h.is_on());
        assert_eq!(h.buckets().count(), 0);
    }
}
