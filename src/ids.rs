//! The identities the aggregation keys on: tenants and workflows as 128-bit UUIDs, runs as
//! 128-bit keys, series as small integers. Allocation-free to compare and hash; a leaf: imports
//! nothing of the crate.

use std::fmt;

/// A UUID as 128 bits: the cheap, allocation-free key for tenants and workflows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid128(pub u128);

impl Uuid128 {
    /// Parses the canonical 8-4-4-4-12 hexadecimal form (either case).
    pub fn parse(text: &str) -> Option<Uuid128> {
        let b: &[u8; 36] = text.as_bytes().try_into().ok()?;
        if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        // The 32 digits side by side, then eight at a time.
        let mut digits = [0u8; 32];
        digits[0..8].copy_from_slice(&b[0..8]);
        digits[8..12].copy_from_slice(&b[9..13]);
        digits[12..16].copy_from_slice(&b[14..18]);
        digits[16..20].copy_from_slice(&b[19..23]);
        digits[20..32].copy_from_slice(&b[24..36]);
        let mut value: u128 = 0;
        for chunk in digits.chunks_exact(8) {
            let word = u64::from_le_bytes(chunk.try_into().ok()?);
            value = (value << 32) | u128::from(hex8(word)?);
        }
        Some(Uuid128(value))
    }
}

/// Eight hexadecimal digits (either case, the first in the lowest byte) as their value, or `None`
/// if any byte is not one; all eight at once.
fn hex8(word: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if word & HIGH != 0 {
        return None;
    }
    // With every byte below 0x80, adding 0x80 - k sets a byte's high bit exactly when it is >= k.
    let at_least = |w: u64, k: u8| w + ONES * u64::from(0x80 - k);
    let lower = word | (ONES * 0x20);
    let digit = at_least(word, b'0') & !at_least(word, b'9' + 1);
    let letter = at_least(lower, b'a') & !at_least(lower, b'f' + 1);
    if (digit | letter) & HIGH != HIGH {
        return None;
    }
    let nibbles = (word & (ONES * 0x0f)) + ((letter & HIGH) >> 7) * 9;
    // Pairs, then quads, then the eight, the first digit highest.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = ((pairs << 8) | (pairs >> 16)) & 0x0000_ffff_0000_ffff;
    Some((((quads << 16) | (quads >> 32)) & 0xffff_ffff) as u32)
}

/// A run's identity for remembering outcomes: the UUID's bits when `metadata.id` is a UUID (it
/// always is from Hatchet), else a 128-bit hash of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunKey(pub u128);

impl RunKey {
    pub fn of(id: &str) -> RunKey {
        match Uuid128::parse(id) {
            Some(uuid) => RunKey(uuid.0),
            None => {
                use std::hash::{BuildHasher, Hasher};
                // Fixed keys: one id gives one key for the life of the process (nothing is persisted).
                let hash = |seed: u64| {
                    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                        .build_hasher();
                    h.write_u64(seed);
                    h.write(id.as_bytes());
                    h.finish()
                };
                RunKey((u128::from(hash(0x68617463)) << 64) | u128::from(hash(0x72756e73)))
            }
        }
    }
}

/// The canonical lower-case 8-4-4-4-12 form, whatever case the producer used.
impl fmt::Display for Uuid128 {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let hex = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

/// One series of the aggregation (a `tenant_id`, `workflow` pair): its index, never reused while
/// the process runs, so nothing that still holds an old id counts into another workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u32);

impl SeriesId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The input partition an update came from, as a small number the source hands out (a Kafka
/// topic and partition; a replayed file is one partition). Runs, remembered outcomes and window
/// contributions are kept by partition, so that a partition's share of the state can leave with
/// the partition (dropped here, rebuilt from the topic by the member that takes it over).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub u16);

/// How far the state has taken in each [`Partition`]: the source's position just past the last
/// message processed (for Kafka, the next offset to read). The aggregation keeps it under the
/// same lock as what it counts, and a rendered page carries the positions it shows, so that the
/// source can commit exactly the messages whose effects a scrape delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions(Vec<Option<i64>>);

impl Positions {
    /// Records that `partition` is processed up to, not including, `next`. Never moves back.
    pub fn advance(&mut self, partition: Partition, next: i64) {
        let at = usize::from(partition.0);
        if self.0.len() <= at {
            self.0.resize(at + 1, None);
        }
        let slot = &mut self.0[at];
        *slot = Some(slot.map_or(next, |known| known.max(next)));
    }

    /// Takes in every position of `other` that is further; whether any was.
    pub fn merge(&mut self, other: &Positions) -> bool {
        let mut moved = false;
        for (partition, next) in other.iter() {
            moved |= self.get(partition).is_none_or(|known| known < next);
            self.advance(partition, next);
        }
        moved
    }

    /// Forgets `partition` (it left: a later owner's positions start afresh).
    pub fn forget(&mut self, partition: Partition) {
        if let Some(slot) = self.0.get_mut(usize::from(partition.0)) {
            *slot = None;
        }
    }

    pub fn get(&self, partition: Partition) -> Option<i64> {
        self.0.get(usize::from(partition.0)).copied().flatten()
    }

    /// Every partition with a position.
    pub fn iter(&self) -> impl Iterator<Item = (Partition, i64)> + '_ {
        (self.0.iter().enumerate()).filter_map(|(at, next)| Some((Partition(u16::try_from(at).ok()?), (*next)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_display_canonical_lower_case() {
        let id = Uuid128::parse("707D0855-80AB-4E1F-A156-F1C4546CBF52").unwrap();
        assert_eq!(id.to_string(), "707d0855-80ab-4e1f-a156-f1c4546cbf52");
        assert_eq!(Uuid128(1).to_string(), "00000000-0000-0000-0000-000000000001");
        assert_eq!(Uuid128::parse("not-a-uuid"), None);
    }

    #[test]
    fn uuids_parse_as_their_hexadecimal_digits_and_nothing_else_does() {
        let mut value: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        for _ in 0..200 {
            value = value
                .rotate_left(7)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            let text = Uuid128(value).to_string();
            assert_eq!(Uuid128::parse(&text), Some(Uuid128(value)), "{text}");
            assert_eq!(Uuid128::parse(&text.to_uppercase()), Some(Uuid128(value)), "{text}");
            for at in 0..36 {
                for bad in [b'g', b'-', b' ', b'/', b':', b'@', b'G', b'`', b'\x7f', b'\x00'] {
                    let mut bytes = text.clone().into_bytes();
                    if bytes[at] == bad {
                        continue;
                    }
                    bytes[at] = bad;
                    let changed = String::from_utf8(bytes).unwrap();
                    assert_eq!(Uuid128::parse(&changed), None, "{changed}");
                }
            }
            assert_eq!(Uuid128::parse(&text[1..]), None);
            assert_eq!(Uuid128::parse(&format!("{text}0")), None);
        }
    }

    #[test]
    fn positions_only_move_forward_until_forgotten() {
        let mut positions = Positions::default();
        assert_eq!(positions.get(Partition(3)), None);
        positions.advance(Partition(3), 10);
        positions.advance(Partition(3), 7);
        positions.advance(Partition(0), 1);
        assert_eq!(positions.get(Partition(3)), Some(10));
        assert_eq!(
            positions.iter().collect::<Vec<_>>(),
            [(Partition(0), 1), (Partition(3), 10)]
        );
        let mut merged = Positions::default();
        merged.advance(Partition(3), 4);
        assert!(merged.merge(&positions));
        assert!(!merged.merge(&positions), "nothing further");
        assert_eq!(merged, positions);
        positions.forget(Partition(3));
        positions.forget(Partition(9));
        positions.advance(Partition(3), 2);
        assert_eq!(
            positions.get(Partition(3)),
            Some(2),
            "a partition that came back starts afresh"
        );
    }
}
