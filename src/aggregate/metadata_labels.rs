//! `additionalMetadata` keys turned into labels, with a cap on distinct values per label.
//!
//! `[metrics] metadata_labels = ["customer_tier"]` adds a `customer_tier` label to the outcome
//! counter and the duration histogram. Values are interned once per label: a value is a small
//! integer on the hot path, its text is needed only at scrape time. Beyond
//! `metadata_label_max_values` distinct values a label's new values fold into `__overflow__`, so a
//! key that turns out to carry ids cannot explode the exposition.

use super::label_value::{self, AlterationCounts};
use crate::model::RawJson;
use rustc_hash::FxHashMap;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// At most this many metadata labels (config validation enforces it).
pub const MAX_METADATA_LABELS: usize = 4;

/// The interned values of one outcome's metadata labels; unused positions are 0.
pub type MetadataKey = [u16; MAX_METADATA_LABELS];

/// Value id of an absent key (`""`) and of the overflow value.
const ABSENT: u16 = 0;
const OVERFLOW: u16 = u16::MAX;
pub const OVERFLOW_VALUE: &str = "__overflow__";

/// The key that stands for every combination beyond a workflow's cap.
pub const ALL_OVERFLOW: MetadataKey = [OVERFLOW; MAX_METADATA_LABELS];

#[derive(Debug)]
pub struct MetadataLabels {
    names: Vec<String>,
    max_values: usize,
    /// Per label: value text -> id, and id -> text (id 0 is the empty value).
    ids: Vec<FxHashMap<String, u16>>,
    texts: Vec<Vec<String>>,
    /// Values longer than this are cut (see [`label_value`]).
    max_value_bytes: usize,
    /// Outcomes whose value of some label was folded into `__overflow__`.
    pub folded: u64,
    /// Per label: distinct values altered to be label values (cut, control characters replaced).
    pub altered: Vec<AlterationCounts>,
}

impl MetadataLabels {
    /// `max_values` is capped below `u16::MAX`.
    pub fn new(names: Vec<String>, max_values: usize, max_value_bytes: usize) -> MetadataLabels {
        let count = names.len().min(MAX_METADATA_LABELS);
        MetadataLabels {
            names: names.into_iter().take(count).collect(),
            max_values: max_values.min(usize::from(u16::MAX) - 2),
            ids: vec![FxHashMap::default(); count],
            texts: vec![vec![String::new()]; count],
            max_value_bytes,
            folded: 0,
            altered: vec![AlterationCounts::default(); count],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The text of value `id` of label `label`.
    pub fn value(&self, label: usize, id: u16) -> &str {
        match id {
            OVERFLOW => OVERFLOW_VALUE,
            id => self.texts[label].get(usize::from(id)).map_or("", String::as_str),
        }
    }

    /// The key of one outcome's `additionalMetadata` (absent or not an object: all empty).
    /// Strings are taken unescaped, other JSON values as their JSON text, `null` as empty.
    pub fn key_of(&mut self, metadata: Option<RawJson<'_>>) -> MetadataKey {
        let mut key = [ABSENT; MAX_METADATA_LABELS];
        let Some(raw) = metadata else { return key };
        let mut found: [Option<Cow<'_, str>>; MAX_METADATA_LABELS] = Default::default();
        let mut deserializer = serde_json::Deserializer::from_str(raw.get());
        if deserializer
            .deserialize_map(Pick {
                names: &self.names,
                found: &mut found,
            })
            .is_err()
        {
            return key;
        }
        for (label, value) in found.iter().enumerate().take(self.names.len()) {
            if let Some(text) = value {
                key[label] = self.intern(label, text);
            }
        }
        key
    }

    fn intern(&mut self, label: usize, text: &str) -> u16 {
        if text.is_empty() {
            return ABSENT;
        }
        // Values are kept as their label text: a 1 MB value is never stored or compared again.
        let (text, altered) = label_value::sanitize(text, self.max_value_bytes);
        let text = text.as_ref();
        // A value spelled like the overflow value is the overflow value: one series, not two.
        if text == OVERFLOW_VALUE {
            return OVERFLOW;
        }
        if let Some(&id) = self.ids[label].get(text) {
            return id;
        }
        if self.ids[label].len() >= self.max_values {
            self.folded += 1;
            return OVERFLOW;
        }
        self.altered[label].add(altered);
        let id = self.texts[label].len() as u16;
        self.texts[label].push(text.to_string());
        self.ids[label].insert(text.to_string(), id);
        id
    }
}

/// Walks the metadata object once, keeping the values of the configured keys.
struct Pick<'n, 'f, 'de> {
    names: &'n [String],
    found: &'f mut [Option<Cow<'de, str>>; MAX_METADATA_LABELS],
}

impl<'de> Visitor<'de> for Pick<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.names.iter().position(|n| *n == key) {
                Some(at) => {
                    let raw: &'de RawValue = map.next_value()?;
                    let text = raw.get();
                    self.found[at] = if text.starts_with('"') {
                        serde_json::from_str::<Cow<'de, str>>(text).ok()
                    } else if text == "null" {
                        None
                    } else {
                        Some(Cow::Borrowed(text))
                    };
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawJson<'_> {
        RawJson::from_checked(text)
    }

    #[test]
    fn picks_configured_keys_and_interns_values() {
        let mut labels = MetadataLabels::new(vec!["customer_tier".into(), "source".into()], 10, 128);
        let gold = labels.key_of(Some(raw(r#"{"source":"api","x":{"deep":[1]},"customer_tier":"gold"}"#)));
        let again = labels.key_of(Some(raw(r#"{"customer_tier":"gold","source":"api"}"#)));
        assert_eq!(gold, again);
        assert_eq!(labels.value(0, gold[0]), "gold");
        assert_eq!(labels.value(1, gold[1]), "api");
        let absent = labels.key_of(Some(raw(r#"{"source":null}"#)));
        assert_eq!((labels.value(0, absent[0]), labels.value(1, absent[1])), ("", ""));
        assert_eq!(labels.key_of(None), [0; MAX_METADATA_LABELS]);
        let typed = labels.key_of(Some(raw(r#"{"customer_tier":42,"source":"caf\u00e9 \"x\""}"#)));
        assert_eq!(
            (labels.value(0, typed[0]), labels.value(1, typed[1])),
            ("42", "café \"x\"")
        );
    }

    #[test]
    fn values_beyond_the_cap_fold_into_overflow() {
        let mut labels = MetadataLabels::new(vec!["customer_id".into()], 3, 128);
        let keys: Vec<_> = (0..10)
            .map(|i| labels.key_of(Some(raw(&format!(r#"{{"customer_id":"c{i}"}}"#)))))
            .collect();
        let texts: Vec<_> = keys.iter().map(|k| labels.value(0, k[0]).to_string()).collect();
        assert_eq!(&texts[..4], ["c0", "c1", "c2", OVERFLOW_VALUE]);
        assert_eq!(labels.folded, 7);
        let known = labels.key_of(Some(raw(r#"{"customer_id":"c1"}"#)));
        assert_eq!(labels.value(0, known[0]), "c1", "known values stay");
    }

    #[test]
    fn a_value_spelled_like_the_overflow_is_the_overflow() {
        let mut labels = MetadataLabels::new(vec!["tier".into()], 1, 128);
        let spelled = labels.key_of(Some(raw(r#"{"tier":"__overflow__"}"#)));
        labels.key_of(Some(raw(r#"{"tier":"gold"}"#)));
        let folded = labels.key_of(Some(raw(r#"{"tier":"silver"}"#)));
        assert_eq!(spelled, folded, "one series, not two with the same labels");
    }

    #[test]
    fn malformed_metadata_gives_empty_values() {
        let mut labels = MetadataLabels::new(vec!["a".into()], 3, 128);
        assert_eq!(labels.key_of(Some(raw(r#"[1,2]"#))), [0; MAX_METADATA_LABELS]);
        assert_eq!(labels.key_of(Some(raw(r#""text""#))), [0; MAX_METADATA_LABELS]);
    }

    #[test]
    fn long_and_unsafe_values_are_stored_as_label_values_and_counted_once() {
        let mut labels = MetadataLabels::new(vec!["customer".into()], 10, 64);
        let long = "c".repeat(1 << 20);
        let doc = |value: &str| serde_json::json!({ "customer": value }).to_string();
        let first = labels.key_of(Some(raw(&doc(&long))));
        let again = labels.key_of(Some(raw(&doc(&long))));
        assert_eq!(first, again);
        assert_eq!(labels.value(0, first[0]).len(), 64);
        let other = labels.key_of(Some(raw(&doc(&format!("{}d", &long[1..])))));
        assert_ne!(first, other, "long values that differ stay distinct");
        let unsafe_value = labels.key_of(Some(raw(&doc("gold\r\n\u{0}"))));
        assert_eq!(labels.value(0, unsafe_value[0]), "gold\u{FFFD}\u{FFFD}\u{FFFD}");
        assert_eq!(labels.altered[0], AlterationCounts { cut: 2, replaced: 1 });
        let stored: usize = labels.ids[0].keys().map(String::len).sum();
        assert!(stored < 1024, "only the cut values are stored: {stored} bytes");
    }
}
