//! The fast path of [`decode`](super::decode): one pass over the bytes that reads the fields the
//! service uses and skips (and checks) everything else, without serde's per-field machinery.
//!
//! It is an optimisation, never a second opinion: it returns the run exactly as serde's path
//! would read it, or `None` whenever it is not sure (invalid JSON, a duplicate field, a missing
//! or mistyped one, a number that is not a plain integer, escapes it does not take, nesting past
//! 128 levels), and then serde's path decides, and explains a rejection. So every message it
//! refuses costs a second pass; the traffic Hatchet writes takes this path whole. The tests hold
//! both paths equal over real and synthetic documents and over corrupted ones.
//!
//! The whole message is valid UTF-8 before it gets here, so a string's text is checked only for
//! what JSON adds: its escapes and its control characters.

use crate::ids::Uuid128;
use crate::model::timestamp::{self, MinuteCache, Timestamp};
use crate::model::{APIResourceMeta, RawJson, V1TaskStatus, V1WorkflowRun};
use std::borrow::Cow;

/// Reads a whole message (leading whitespace allowed, nothing but whitespace after the object),
/// with the ids it already read as UUIDs on the way.
pub(super) fn run(text: &str) -> Option<(V1WorkflowRun<'_>, KnownIds)> {
    let mut scan = Scan {
        text,
        at: 0,
        ids: KnownIds::default(),
        minutes: MinuteCache::default(),
    };
    scan.whitespace();
    let run = scan.run()?;
    scan.whitespace();
    (scan.at == text.len()).then_some((run, scan.ids))
}

/// The ids the scan read as UUIDs (`None`: not read so; [`Uuid128::parse`] of the text decides).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct KnownIds {
    pub run_id: Option<Uuid128>,
    pub tenant: Option<Uuid128>,
    pub workflow: Option<Uuid128>,
}

/// The members of `metadata` the service reads.
#[derive(Clone, Copy)]
enum Meta {
    Id,
    CreatedAt,
    UpdatedAt,
}

const META_FIELDS: [(&str, Meta); 3] = [
    ("id", Meta::Id),
    ("createdAt", Meta::CreatedAt),
    ("updatedAt", Meta::UpdatedAt),
];

/// The members of a run, in the order Hatchet's own documents tend to list them.
#[derive(Clone, Copy)]
enum Field {
    Metadata,
    Status,
    TenantId,
    WorkflowId,
    DisplayName,
    StartedAt,
    FinishedAt,
    CreatedAt,
    Duration,
    Input,
    Output,
    AdditionalMetadata,
    ErrorMessage,
    WorkflowVersionId,
    ParentTaskExternalId,
    PayloadsRestricted,
}

const RUN_FIELDS: [(&str, Field); 16] = [
    ("metadata", Field::Metadata),
    ("status", Field::Status),
    ("startedAt", Field::StartedAt),
    ("finishedAt", Field::FinishedAt),
    ("duration", Field::Duration),
    ("tenantId", Field::TenantId),
    ("additionalMetadata", Field::AdditionalMetadata),
    ("displayName", Field::DisplayName),
    ("workflowId", Field::WorkflowId),
    ("output", Field::Output),
    ("errorMessage", Field::ErrorMessage),
    ("workflowVersionId", Field::WorkflowVersionId),
    ("input", Field::Input),
    ("createdAt", Field::CreatedAt),
    ("parentTaskExternalId", Field::ParentTaskExternalId),
    ("payloadsRestricted", Field::PayloadsRestricted),
];

struct Scan<'a> {
    text: &'a str,
    at: usize,
    ids: KnownIds,
    /// The date, hour and minute of the last timestamp read.
    minutes: MinuteCache,
}

/// Bit `k` set in each byte of a word where that byte is `'"'`, `'\\'` or below 0x20, for the
/// lowest such byte at least (bytes above it may be flagged falsely; only the lowest is used).
fn stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    zero_byte(word ^ (ONES * u64::from(b'"')))
        | zero_byte(word ^ (ONES * u64::from(b'\\')))
        | (word.wrapping_sub(ONES * 0x20) & !word & HIGH)
}

impl<'a> Scan<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn whitespace(&mut self) {
        // Most calls find none: anything above a space ends it at the first comparison.
        while let Some(&byte) = self.bytes().get(self.at) {
            if byte > b' ' || !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return;
            }
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, with the scanner moved to it. Compact JSON has none,
    /// so one look usually settles it.
    fn token(&mut self) -> Option<u8> {
        match self.peek()? {
            byte if byte > b' ' => Some(byte),
            _ => {
                self.whitespace();
                self.peek()
            }
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `null`, if that is what comes next.
    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// From inside a string, the position of its closing quote, a backslash or a control
    /// character, whichever comes first (eight bytes at a time).
    fn to_stop(&self) -> Option<usize> {
        let bytes = self.bytes();
        let mut at = self.at;
        while let Some(chunk) = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
            let found = stops(u64::from_le_bytes(*chunk));
            if found != 0 {
                return Some(at + (found.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
        (at..bytes.len()).find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f))
    }

    /// A string's text, borrowed when it has no escapes, unescaped as serde_json would otherwise.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let stop = self.to_stop()?;
        self.at = stop;
        match self.bytes()[stop] {
            b'"' => {
                self.at += 1;
                Some(Cow::Borrowed(self.text.get(start..stop)?))
            }
            b'\\' => {
                let mut owned = String::from(self.text.get(start..stop)?);
                loop {
                    match self.bytes().get(self.at)? {
                        b'"' => {
                            self.at += 1;
                            return Some(Cow::Owned(owned));
                        }
                        b'\\' => {
                            self.at += 1;
                            owned.push(self.escape()?);
                        }
                        _ => {
                            let from = self.at;
                            self.at = self.to_stop()?;
                            if self.bytes()[self.at] < 0x20 {
                                return None;
                            }
                            owned.push_str(self.text.get(from..self.at)?);
                        }
                    }
                }
            }
            _ => None,
        }
    }

    /// A string's text that must not need unescaping (field names, statuses, timestamps): `None`
    /// sends anything else to serde's path.
    fn plain_string(&mut self) -> Option<&'a str> {
        match self.string()? {
            Cow::Borrowed(text) => Some(text),
            Cow::Owned(_) => None,
        }
    }

    /// One escape after its backslash, as a char. Lone surrogates are left to serde's path.
    fn escape(&mut self) -> Option<char> {
        let kind = self.peek()?;
        self.at += 1;
        Some(match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xD800..=0xDBFF => {
                        self.literal(b"\\u")?;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(first)?,
                }
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes().get(self.at..self.at + 4)?;
        let mut value = 0;
        for &digit in digits {
            value = value * 16 + char::from(digit).to_digit(16)?;
        }
        self.at += 4;
        Some(value)
    }

    /// Skips a string, checking its escapes as serde_json does when it ignores one (any four hex
    /// digits after `\u`).
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.at = self.to_stop()?;
            match self.bytes()[self.at] {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            self.at += 1;
                            self.hex4()?;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// Skips a number, checking its grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn skip_number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// An integer that fits an `i64`, as serde_json reads one into an `i64` field; a fraction,
    /// an exponent or a larger number is left to serde's path.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.eat(b'-').is_some();
        let start = self.at;
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if let Some(b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
            return None;
        }
        let mut value: i64 = 0;
        for &digit in &self.bytes()[start..self.at] {
            let digit = i64::from(digit - b'0');
            value = value.checked_mul(10)?;
            value = if negative {
                value.checked_sub(digit)?
            } else {
                value.checked_add(digit)?
            };
        }
        Some(value)
    }

    /// Skips one value of any kind, checking it is JSON. Nesting is followed with one bit per
    /// level (set: in an object), up to 128 levels.
    fn skip_value(&mut self) -> Option<()> {
        let mut objects: u128 = 0;
        let mut depth = 0u32;
        loop {
            // A value.
            match self.token()? {
                b'"' => self.skip_string()?,
                b'{' | b'[' if depth == 128 => return None,
                b'{' => {
                    self.at += 1;
                    if self.token()? != b'}' {
                        objects |= 1 << depth;
                        depth += 1;
                        self.key_and_colon()?;
                        continue;
                    }
                    self.at += 1;
                }
                b'[' => {
                    self.at += 1;
                    if self.token()? != b']' {
                        objects &= !(1 << depth);
                        depth += 1;
                        continue;
                    }
                    self.at += 1;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => self.skip_number()?,
            }
            // What follows it: the next element, or the end of enclosing containers.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.whitespace();
                let in_object = objects & (1 << (depth - 1)) != 0;
                match (self.peek()?, in_object) {
                    (b',', true) => {
                        self.at += 1;
                        self.whitespace();
                        self.key_and_colon()?;
                        break;
                    }
                    (b',', false) => {
                        self.at += 1;
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        self.at += 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    fn key_and_colon(&mut self) -> Option<()> {
        self.skip_string()?;
        self.colon()
    }

    /// The `:` after a key (whitespace around it skipped).
    fn colon(&mut self) -> Option<()> {
        if self.token()? != b':' {
            return None;
        }
        self.at += 1;
        self.token().map(drop)
    }

    /// The key that starts here: which of `names` it is, compared in place (no scan for its end),
    /// or `None` for any other key (without escapes: an escaped key may spell a known one).
    fn key<T: Copy>(&mut self, names: &[(&str, T)]) -> Option<Option<T>> {
        if self.peek()? != b'"' {
            return None;
        }
        let rest = &self.bytes()[self.at + 1..];
        for &(name, field) in names {
            let len = name.len();
            if rest.get(len) == Some(&b'"') && rest.starts_with(name.as_bytes()) {
                self.at += len + 2;
                return Some(Some(field));
            }
        }
        self.plain_string()?;
        Some(None)
    }

    /// The members of an object, each key (as [`Scan::key`] tells it) given to `member` with the
    /// scanner at its value (whitespace skipped); `member` reads the value and says whether it
    /// was fine.
    fn object<T: Copy>(
        &mut self,
        names: &[(&str, T)],
        mut member: impl FnMut(&mut Self, Option<T>) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.token()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.key(names)?;
            self.colon()?;
            member(self, key)?;
            match self.token()? {
                b',' => {
                    self.at += 1;
                    self.token()?;
                }
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A value kept as its text.
    fn raw(&mut self) -> Option<RawJson<'a>> {
        let start = self.at;
        self.skip_value()?;
        Some(RawJson::from_checked(self.text.get(start..self.at)?))
    }

    /// An optional timestamp: `null`, Go's zero time and year 1 are `None`. Go's zero time as
    /// Go writes it (most updates hold one or two) is recognised by its text, without parsing it.
    fn optional_timestamp(&mut self) -> Option<Option<Timestamp>> {
        if self.null() || self.string_is(timestamp::GO_ZERO_TIME) {
            return Some(None);
        }
        let ts = self.timestamp()?.0;
        Some((!timestamp::is_go_zero_time(&ts)).then_some(ts))
    }

    /// A string, with `known`'s id of the scan set to it as a UUID when it holds one: then read
    /// in place (hex digits and dashes hold nothing a string scan looks for); any other string
    /// as [`Scan::string`] reads it.
    fn id_string(&mut self, known: fn(&mut KnownIds) -> &mut Option<Uuid128>) -> Option<Cow<'a, str>> {
        let at = self.at;
        if self.bytes().get(at) == Some(&b'"') && self.bytes().get(at + 37) == Some(&b'"') {
            if let Some(text) = self.text.get(at + 1..at + 37) {
                if let Some(id) = Uuid128::parse(text) {
                    *known(&mut self.ids) = Some(id);
                    self.at = at + 38;
                    return Some(Cow::Borrowed(text));
                }
            }
        }
        *known(&mut self.ids) = None;
        self.string()
    }

    /// Whether the string here is exactly `text`, without escapes; if so, steps past it.
    fn string_is(&mut self, text: &str) -> bool {
        let (len, here) = (text.len(), &self.bytes()[self.at..]);
        let is = here.len() > len + 1 && here[0] == b'"' && &here[1..=len] == text.as_bytes() && here[len + 1] == b'"';
        if is {
            self.at += len + 2;
        }
        is
    }

    /// A timestamp string, read in place (its text holds nothing a string scan looks for, so it
    /// needs none), and its text. Anything but exactly a timestamp between the quotes (an
    /// escape, say) is left to serde's path.
    fn timestamp(&mut self) -> Option<(Timestamp, &'a str)> {
        self.eat(b'"')?;
        let start = self.at;
        let (ts, len) = timestamp::parse_rfc3339_prefix_with(&self.bytes()[start..], &mut self.minutes)?;
        self.at = start + len;
        self.eat(b'"')?;
        Some((ts, self.text.get(start..start + len)?))
    }

    fn metadata(&mut self) -> Option<APIResourceMeta<'a>> {
        // `created`: createdAt and its text, which updatedAt usually repeats.
        let (mut id, mut created, mut updated) = (None, None::<(Timestamp, &str)>, None);
        self.object(&META_FIELDS, |scan, key| {
            match key {
                Some(Meta::Id) if id.is_none() => id = Some(scan.id_string(|ids| &mut ids.run_id)?),
                Some(Meta::CreatedAt) if created.is_none() => created = Some(scan.timestamp()?),
                Some(Meta::UpdatedAt) if updated.is_none() => {
                    // Usually the same text as createdAt: compared, not parsed again.
                    updated = Some(match created {
                        Some((parsed, text)) if scan.string_is(text) => parsed,
                        _ => scan.timestamp()?.0,
                    });
                }
                Some(_) => return None,
                None => scan.skip_value()?,
            }
            Some(())
        })?;
        Some(APIResourceMeta {
            id: id?,
            created_at: created?.0,
            updated_at: updated?,
        })
    }

    fn run(&mut self) -> Option<V1WorkflowRun<'a>> {
        /// A field seen once: a second occurrence is serde's to refuse.
        fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
            if slot.is_some() {
                return None;
            }
            *slot = Some(value?);
            Some(())
        }
        let mut metadata = None;
        let mut status = None;
        let (mut started_at, mut finished_at, mut created_at) = (None, None, None);
        let mut duration = None;
        let (mut tenant_id, mut workflow_id, mut display_name) = (None, None, None);
        let (mut input, mut output, mut additional_metadata) = (None, None, None);
        let (mut error_message, mut workflow_version_id, mut parent_task_external_id) = (None, None, None);
        let mut payloads_restricted = None;
        self.object(&RUN_FIELDS, |scan, key| match key {
            Some(Field::Metadata) => once(&mut metadata, scan.metadata()),
            Some(Field::Status) => once(&mut status, scan.plain_string().and_then(V1TaskStatus::from_wire)),
            Some(Field::TenantId) => once(&mut tenant_id, scan.id_string(|ids| &mut ids.tenant)),
            Some(Field::WorkflowId) => once(&mut workflow_id, scan.id_string(|ids| &mut ids.workflow)),
            Some(Field::DisplayName) => once(&mut display_name, scan.string()),
            Some(Field::StartedAt) => once(&mut started_at, scan.optional_timestamp()),
            Some(Field::FinishedAt) => once(&mut finished_at, scan.optional_timestamp()),
            Some(Field::CreatedAt) => once(&mut created_at, scan.optional_timestamp()),
            Some(Field::Duration) => once(&mut duration, scan.optional(Self::integer)),
            Some(Field::Input) => once(&mut input, scan.optional(Self::raw)),
            Some(Field::Output) => once(&mut output, scan.optional(Self::raw)),
            Some(Field::AdditionalMetadata) => once(&mut additional_metadata, scan.optional(Self::raw)),
            Some(Field::ErrorMessage) => once(&mut error_message, scan.optional(Self::string)),
            Some(Field::WorkflowVersionId) => once(&mut workflow_version_id, scan.optional(Self::string)),
            Some(Field::ParentTaskExternalId) => once(&mut parent_task_external_id, scan.optional(Self::string)),
            Some(Field::PayloadsRestricted) => once(&mut payloads_restricted, scan.optional(Self::boolean)),
            None => scan.skip_value(),
        })?;
        Some(V1WorkflowRun {
            metadata: metadata?,
            status: status?,
            started_at: started_at.flatten(),
            finished_at: finished_at.flatten(),
            duration: duration.flatten(),
            tenant_id: tenant_id?,
            additional_metadata: additional_metadata.flatten(),
            display_name: display_name?,
            workflow_id: workflow_id?,
            output: output.flatten(),
            error_message: error_message.flatten(),
            workflow_version_id: workflow_version_id.flatten(),
            input: input.flatten(),
            created_at: created_at.flatten(),
            parent_task_external_id: parent_task_external_id.flatten(),
            payloads_restricted: payloads_restricted.flatten(),
        })
    }

    /// `null` as `None`, else what `read` reads.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            return Some(None);
        }
        read(self).map(Some)
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            _ => self.literal(b"false").map(|()| false),
        }
    }
}

#[cfg(test)]
mod tests;
