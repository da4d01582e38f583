//! Routing's fast reader of a Meta `messages` change: one pass over the record's text, the
//! fields routing needs borrowed from it, everything else checked to be JSON and skipped.
//!
//! It reads the same [`MetaMessagesValue`] that serde's typed parse would, or declines: any
//! record it is not sure to read exactly as serde does (another field, an escaped key, a
//! number routing would have to reformat, a duplicate key, deep nesting, anything that is not
//! JSON) is left to the typed parse, which gives the same result or the error. So a record it
//! accepts is whole, valid JSON (what [`RawJson`](crate::route::RawJson) relies on), and the
//! routed event is the typed parse's, field for field; the tests check both on every fixture
//! and on many broken variants of them.
//!
//! Why it exists: serde's derived visitors compare every key through a field enum, walk each
//! skipped value token by token and scan each string twice; this reader costs a fraction of
//! that per event (docs/benchmarks.md has the figures).

use std::borrow::Cow;

use serde_json::Value;

use crate::model::{
    First, Loose, MetaContact, MetaError, MetaMessage, MetaMessagesValue, MetaMetadata,
    MetaProfile, MetaStatus, MetaText, Text,
};

/// Nesting deeper than this is declined (serde_json refuses past 128 levels).
const MAX_DEPTH: usize = 64;

/// `Some((field, value))` for a record whose first entry's first change is a `messages`
/// change with an object value, read exactly as the typed parse reads it; `None` to leave the
/// record to the typed parse.
pub fn meta_messages(text: &str) -> Option<(Text<'_>, MetaMessagesValue<'_>)> {
    let mut scan = Scan {
        text,
        pos: 0,
        depth: 0,
    };
    let mut entry = Once::default();
    scan.object(|s, key| match key {
        "entry" => entry.set(s.first(Scan::entry)?),
        _ => s.skip_value(),
    })?;
    scan.whitespace();
    if scan.pos != text.len() {
        return None;
    }
    let (field, value) = entry.get()?.0.flatten()?;
    if field.as_str() != "messages" {
        return None;
    }
    Some((field, *value?))
}

/// A known key's value, read at most once: a second occurrence declines (serde refuses
/// duplicate fields).
struct Once<T>(Option<T>);

impl<T> Default for Once<T> {
    fn default() -> Self {
        Once(None)
    }
}

impl<T> Once<T> {
    fn set(&mut self, value: T) -> Option<()> {
        if self.0.is_some() {
            return None;
        }
        self.0 = Some(value);
        Some(())
    }

    fn get(self) -> Option<T> {
        self.0
    }

    /// The value, or what serde's `default` gives for a missing key.
    fn or_default(self) -> T
    where
        T: Default,
    {
        self.0.unwrap_or_default()
    }
}

/// Reads an object into the struct `$ty` as serde's derive does, in `Scan`'s single pass:
/// each listed key's value read into its field by its reader (with the `Scan` named `$s`), at
/// most once; any other key checked and skipped. A missing key leaves its field's default
/// (`#[serde(default)]`; for an `Option`, `None`), or declines for a `#[required]` field.
/// Expands to the `Once` slots and the `match` on the key that one would write by hand.
macro_rules! read_object {
    ($scan:expr, |$s:ident| $ty:ident {
        $($(#[$required:ident])? $field:ident: $key:literal => $read:expr,)*
    }) => {{
        $(let mut $field = Once::default();)*
        $scan.object(|$s, key| match key {
            $($key => $field.set($read?),)*
            _ => $s.skip_value(),
        })?;
        Some($ty {
            $($field: read_object!(@take $field $($required)?),)*
        })
    }};
    (@take $field:ident) => {
        $field.or_default()
    };
    (@take $field:ident required) => {
        $field.get()?
    };
}

/// What routing reads of one change: its field and, when present and not null, its value.
type Change<'a> = (Text<'a>, Option<Box<MetaMessagesValue<'a>>>);

/// How many bytes at the start of `bytes` a string scan can pass over (or a JSON writer copy
/// as they are): up to the first quote, backslash or control character. Eight bytes at a time
/// (a byte equal to `c` is a zero byte of `v ^ c`; the lowest flagged byte of each test is
/// always a true match).
pub(crate) fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v;
    // `bytes` runs to the end of the record, so a short string's closing quote is nearly
    // always found by a word read, not byte by byte.
    let mut run = 0;
    for chunk in bytes.chunks_exact(8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let control = v.wrapping_sub(ONES * 0x20) & !v;
        let special = (zero_byte(v ^ (ONES * u64::from(b'"')))
            | zero_byte(v ^ (ONES * u64::from(b'\\')))
            | control)
            & HIGHS;
        if special != 0 {
            return run + special.trailing_zeros() as usize / 8;
        }
        run += 8;
    }
    run + bytes[run..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - run)
}

/// The code unit of the `\uXXXX` escape at `at` (the backslash), if its four digits are hex.
fn hex_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at + 1..at + 6)?;
    if digits[0] != b'u' || !digits[1..].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(&digits[1..]).ok()?, 16).ok()
}

struct Scan<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

/// Every method returns `None` to decline: the text is not JSON, or not a shape this reader
/// is sure to read as serde does.
impl<'a> Scan<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn whitespace(&mut self) {
        let bytes = self.bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        match *self.bytes().get(self.pos)? {
            byte if byte > b' ' => Some(byte),
            _ => {
                self.whitespace();
                self.bytes().get(self.pos).copied()
            }
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes()
            .get(self.pos..)?
            .starts_with(word)
            .then(|| self.pos += word.len())
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// A string at the cursor: the range of its contents and whether it has escapes. Control
    /// characters and malformed escapes decline; so does an escaped surrogate that is not half
    /// of a pair (emoji come escaped as pairs).
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.expect(b'"')?;
        let bytes = self.bytes();
        let start = self.pos;
        // Nearly every string is plain: its closing quote ends the first run.
        let end = start + plain_run(bytes.get(start..)?);
        if bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Some((start, end, false));
        }
        self.escaped_string(start, end)
    }

    /// The rest of a string from `pos`, where its first run ended at something other than the
    /// closing quote. Kept out of [`Scan::string`], so the plain case stays a short call.
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, mut pos: usize) -> Option<(usize, usize, bool)> {
        let bytes = self.bytes();
        loop {
            match *bytes.get(pos)? {
                b'"' => break,
                b'\\' => {
                    pos += match *bytes.get(pos + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' => match hex_unit(bytes, pos)? {
                            0xD800..=0xDBFF => {
                                let low = (bytes.get(pos + 6) == Some(&b'\\'))
                                    .then(|| hex_unit(bytes, pos + 6))
                                    .flatten()?;
                                if !(0xDC00..=0xDFFF).contains(&low) {
                                    return None;
                                }
                                12
                            }
                            0xDC00..=0xDFFF => return None,
                            _ => 6,
                        },
                        _ => return None,
                    }
                }
                _ => return None,
            }
            pos += plain_run(&bytes[pos..]);
        }
        self.pos = pos + 1;
        Some((start, pos, true))
    }

    /// A string value, borrowed unless it has escapes (then unescaped by serde_json itself).
    fn text(&mut self) -> Option<Text<'a>> {
        let (start, end, escaped) = self.string()?;
        if !escaped {
            return Some(Text(Cow::Borrowed(&self.text[start..end])));
        }
        let unescaped: String = serde_json::from_str(&self.text[start - 1..=end]).ok()?;
        Some(Text(Cow::Owned(unescaped)))
    }

    /// An object key; an escaped one declines (serde compares the key unescaped).
    fn key(&mut self) -> Option<&'a str> {
        let (start, end, escaped) = self.string()?;
        (!escaped).then(|| &self.text[start..end])
    }

    /// A number's text, checked against JSON's grammar.
    fn number(&mut self) -> Option<&'a str> {
        let bytes = self.bytes();
        let start = self.pos;
        let digits = |pos: &mut usize| {
            let from = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos > from
        };
        let mut pos = self.pos;
        if bytes.get(pos) == Some(&b'-') {
            pos += 1;
        }
        match bytes.get(pos)? {
            b'0' => pos += 1,
            b'1'..=b'9' => {
                digits(&mut pos);
            }
            _ => return None,
        }
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            if !digits(&mut pos) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = bytes.get(pos) {
            pos += 1;
            if let Some(b'+' | b'-') = bytes.get(pos) {
                pos += 1;
            }
            if !digits(&mut pos) {
                return None;
            }
        }
        self.pos = pos;
        Some(&self.text[start..pos])
    }

    /// Any JSON value, checked and skipped.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.pos += 1;
                self.members(b'}', |s| {
                    s.string()?;
                    s.expect(b':')?;
                    s.skip_value()
                })
            }
            b'[' => {
                self.pos += 1;
                self.members(b']', Scan::skip_value)
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }

    /// The rest of an object or an array, from just after its opening bracket to its `close`,
    /// one level deeper meanwhile: each member (an object's key, colon and value; an array's
    /// element) read by `member`, members separated by commas.
    fn members(
        &mut self,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.nest()?;
        if self.peek()? != close {
            loop {
                member(self)?;
                if self.peek()? != b',' {
                    break;
                }
                self.pos += 1;
            }
        }
        self.expect(close)?;
        self.depth -= 1;
        Some(())
    }

    /// An object, each key handed to `field` with the cursor at its value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.members(b'}', |s| {
            let key = s.key()?;
            s.expect(b':')?;
            field(s, key)
        })
    }

    /// An array's first element read by `element`, the rest checked and skipped (`First`).
    fn first<T>(&mut self, mut element: impl FnMut(&mut Self) -> Option<T>) -> Option<First<T>> {
        self.expect(b'[')?;
        self.nest()?;
        let mut first = None;
        if self.peek()? != b']' {
            first = Some(element(self)?);
            while self.peek()? == b',' {
                self.pos += 1;
                self.skip_value()?;
            }
        }
        self.expect(b']')?;
        self.depth -= 1;
        Some(First(first))
    }

    /// `null` as `None`, anything else read by `value`.
    fn option<T>(&mut self, mut value: impl FnMut(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        value(self).map(Some)
    }

    fn optional_text(&mut self) -> Option<Option<Text<'a>>> {
        self.option(Scan::text)
    }

    /// A [`Loose`] id or timestamp: a string, a non-negative integer as its decimal text,
    /// absent for null, a boolean, an object or an array. Other numbers decline (serde would
    /// reformat them).
    fn loose(&mut self) -> Option<Loose<'a>> {
        match self.peek()? {
            b'"' => self.text().map(|text| Loose(Some(text.0))),
            b'0'..=b'9' => {
                let number: u64 = self.number()?.parse().ok()?;
                Some(Loose(Some(Cow::Owned(number.to_string()))))
            }
            b'-' => None,
            _ => self.skip_value().map(|()| Loose(None)),
        }
    }

    /// An object of which only the key `name` is read (by `read`), the rest checked and
    /// skipped.
    fn only<T>(
        &mut self,
        name: &str,
        mut read: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Once<T>> {
        let mut value = Once::default();
        self.object(|s, key| match key {
            key if key == name => value.set(read(s)?),
            _ => s.skip_value(),
        })?;
        Some(value)
    }

    fn entry(&mut self) -> Option<Option<Change<'a>>> {
        Some(
            self.only("changes", |s| s.first(Scan::change))?
                .or_default()
                .0,
        )
    }

    fn change(&mut self) -> Option<Change<'a>> {
        let (mut field, mut value) = (Once::default(), Once::default());
        self.object(|s, key| match key {
            "field" => field.set(s.text()?),
            "value" => value.set(s.option(|s| s.messages_value().map(Box::new))?),
            _ => s.skip_value(),
        })?;
        Some((field.get()?, value.get().flatten()))
    }

    fn messages_value(&mut self) -> Option<MetaMessagesValue<'a>> {
        read_object!(self, |s| MetaMessagesValue {
            metadata: "metadata" => s.option(Scan::metadata),
            contacts: "contacts" => s.first(Scan::contact),
            messages: "messages" => s.first(Scan::message),
            statuses: "statuses" => s.first(Scan::status),
            errors: "errors" => s.first(Scan::error),
        })
    }

    fn metadata(&mut self) -> Option<MetaMetadata<'a>> {
        let phone_number_id = self.only("phone_number_id", Scan::loose)?.or_default();
        Some(MetaMetadata { phone_number_id })
    }

    fn contact(&mut self) -> Option<MetaContact<'a>> {
        let profile = self.only("profile", |s| s.option(Scan::profile))?;
        Some(MetaContact {
            profile: profile.get().flatten(),
        })
    }

    fn profile(&mut self) -> Option<MetaProfile<'a>> {
        let name = self.only("name", Scan::optional_text)?.get().flatten();
        Some(MetaProfile { name })
    }

    fn message(&mut self) -> Option<MetaMessage<'a>> {
        read_object!(self, |s| MetaMessage {
            #[required]
            id: "id" => s.text(),
            from: "from" => s.loose(),
            from_user_id: "from_user_id" => s.optional_text(),
            timestamp: "timestamp" => s.loose(),
            message_type: "type" => s.optional_text(),
            group_id: "group_id" => s.optional_text(),
            text: "text" => s.option(Scan::message_text),
        })
    }

    fn message_text(&mut self) -> Option<MetaText<'a>> {
        let body = self.only("body", Scan::optional_text)?.get().flatten();
        Some(MetaText { body })
    }

    fn status(&mut self) -> Option<MetaStatus<'a>> {
        read_object!(self, |s| MetaStatus {
            #[required]
            id: "id" => s.text(),
            #[required]
            status: "status" => s.text(),
            timestamp: "timestamp" => s.loose(),
            recipient_id: "recipient_id" => s.loose(),
            recipient_user_id: "recipient_user_id" => s.optional_text(),
            recipient_participant_id: "recipient_participant_id" => s.optional_text(),
            errors: "errors" => s.parsed::<Vec<Value>>(),
        })
    }

    fn error(&mut self) -> Option<MetaError<'a>> {
        read_object!(self, |s| MetaError {
            code: "code" => s.parsed::<Option<i64>>(),
            title: "title" => s.optional_text(),
            message: "message" => s.optional_text(),
        })
    }

    /// A value checked and skipped, then read by serde_json from its own text: for the rare
    /// fields whose type this reader does not build itself.
    fn parsed<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        self.whitespace();
        let start = self.pos;
        self.skip_value()?;
        serde_json::from_str(&self.text[start..self.pos]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MetaEnvelope;
    use crate::route::{as_ingress_produces, route_messages_value, EventBody};
    use wapipe_core::Provider;

    /// What the typed parse routes a record to when it reads it as a `messages` change.
    fn typed(text: &str) -> Option<EventBody> {
        let envelope: MetaEnvelope<'_, Box<MetaMessagesValue<'_>>> =
            serde_json::from_str(text).ok()?;
        let change = envelope.entry.0?.changes.0?;
        let value = change
            .value
            .filter(|_| change.field.as_str() == "messages")?;
        Some(route_messages_value(change.field, *value))
    }

    fn scanned(text: &str) -> Option<EventBody> {
        meta_messages(text).map(|(field, value)| route_messages_value(field, value))
    }

    /// Every Meta event of the fixtures, one record each as the ingress produces them.
    fn records() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut records = Vec::new();
        for dir in ["tests/fixtures", "../core/tests/fixtures/meta"] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| !path.to_string_lossy().contains("wasender"))
                .collect();
            paths.sort();
            for path in paths {
                let body = std::fs::read(&path).unwrap();
                for incoming in as_ingress_produces(Provider::Meta, &body, "raw") {
                    let payload = incoming.payload.unwrap();
                    records.push(String::from_utf8(payload.to_vec()).unwrap());
                }
            }
        }
        records
    }

    /// A small deterministic generator (xorshift), so a failure names a reproducible case.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// A random edit of `text` that keeps it UTF-8: a piece cut out, a token put in, or both.
    fn mutate(text: &str, rng: &mut Rng) -> String {
        const TOKENS: &[&str] = &[
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "null",
            "true",
            "0",
            "01",
            "-1",
            "1.5",
            "1e3",
            "18446744073709551616",
            "\"x\"",
            "\\n",
            "\\u00e9",
            "\\ud83d\\ude00",
            "\\ud800",
            "\\x",
            "\u{1}",
            "é",
            "\"id\":\"dup\",",
            "\"messages\":[],",
            "\"field\":1,",
            "\"value\":null,",
            "\"entry\":[],",
            "\"statuses\":[{\"id\":\"s\",\"status\":\"read\"}],",
            "\"i\\u0064\":\"esc\",",
            "[[[[[[[[",
            "]]]]]]]]",
            "{\"a\":",
            "\"errors\":[{\"code\":1.5}],",
        ];
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        let at = boundaries[rng.below(boundaries.len())];
        let mut out = String::from(&text[..at]);
        let mut rest = at;
        if rng.below(2) == 0 {
            let cut = boundaries
                .iter()
                .copied()
                .filter(|&i| i >= at && i <= at + 8)
                .collect::<Vec<_>>();
            rest = cut[rng.below(cut.len())];
        }
        if rng.below(3) != 0 {
            out.push_str(TOKENS[rng.below(TOKENS.len())]);
        }
        out.push_str(&text[rest..]);
        out
    }

    #[test]
    fn every_messages_record_of_the_fixtures_is_read_in_one_pass_as_the_typed_parse_reads_it() {
        let records = records();
        let mut read = 0;
        for text in &records {
            let typed = typed(text);
            if typed.is_some() {
                assert_eq!(scanned(text), typed, "{text}");
                read += 1;
            } else {
                assert_eq!(scanned(text), None, "{text}");
            }
        }
        // Statuses, messages, errors and field changes of the `messages` field.
        assert!(read >= 30, "only {read} of {} records read", records.len());
    }

    #[test]
    fn a_broken_or_unusual_record_is_read_as_the_typed_parse_reads_it_or_left_to_it() {
        let records = records();
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let (mut both, mut declined_valid) = (0, 0);
        for round in 0..40_000 {
            let base = &records[round % records.len()];
            let mut text = mutate(base, &mut rng);
            if rng.below(4) == 0 {
                text = mutate(&text, &mut rng);
            }
            let typed = typed(&text);
            match scanned(&text) {
                Some(event) => {
                    assert_eq!(Some(event), typed, "round {round}: {text}");
                    assert!(serde_json::from_str::<&serde_json::value::RawValue>(&text).is_ok());
                    both += 1;
                }
                None if typed.is_some() => declined_valid += 1,
                None => {}
            }
        }
        // The edits must leave many records readable, or this test proves nothing.
        assert!(both > 5_000, "only {both} mutated records read");
        println!(
            "read in one pass {both}, left to the typed parse while it reads them {declined_valid}"
        );
    }

    #[test]
    fn a_string_scan_stops_at_the_first_quote_backslash_or_control_character() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let alphabet = [
            b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xe9, 0xff, b'!', b'#',
        ];
        for _ in 0..20_000 {
            let len = rng.below(40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.below(6) {
                    0 => alphabet[rng.below(alphabet.len())],
                    _ => b'x',
                })
                .collect();
            let naive = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len());
            assert_eq!(plain_run(&bytes), naive, "{bytes:?}");
        }
    }

    #[test]
    fn what_the_reader_declines() {
        let ok = r#"{"entry":[{"changes":[{"field":"messages","value":{"messages":[{"id":"w","from":15550001}]}}]}]}"#;
        assert!(meta_messages(ok).is_some());
        for text in [
            // a duplicate known key, an escaped key, a negative or fractional id, a field other
            // than messages, a null value, trailing text, an array where an object is read
            ok.replace(r#""id":"w""#, r#""id":"w","id":"v""#),
            ok.replace(r#""id""#, r#""\u0069d""#),
            ok.replace("15550001", "-15550001"),
            ok.replace("15550001", "1.5"),
            ok.replace(r#""field":"messages""#, r#""field":"calls""#),
            ok.replace(r#"{"messages":[{"id":"w","from":15550001}]}"#, "null"),
            format!("{ok} x"),
            format!("[{ok}]"),
            ok.replace(r#""w""#, "\"w\u{1}\""),
            ok.replace(r#""w""#, r#""\ud83d""#),
            ok.replace(r#""w""#, r#""\ude00\ud83d""#),
        ] {
            assert!(meta_messages(&text).is_none(), "{text}");
        }
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let nested = ok.replace(r#""from""#, &format!(r#""deep":{deep},"from""#));
        assert!(meta_messages(&nested).is_none());
        let escaped = ok.replace(r#""w""#, r#""w\n\u00e9\ud83d\udc4d""#);
        let (_, value) = meta_messages(&escaped).unwrap();
        assert_eq!(value.messages.0.unwrap().id.as_str(), "w\né👍");
    }
}
