//! Reading a request body straight into a message's typed fields.
//!
//! A body parsed into a tree of JSON values costs many times its size (a
//! 1 MiB array of small arrays is ~100 MB of nodes). Requests from
//! unauthenticated or not-yet-authorised peers are therefore read field by
//! field: a message names the keys it wants and their kinds, known keys are
//! kept as strings, flags and integers, every other key is skipped without
//! allocating, and list fields stop at their own maximum. Memory is the kept
//! strings plus a few words per nesting level.
//!
//! A field of the wrong kind is a [`FieldError`] naming it; the rest of the
//! body is still checked to be valid JSON.

use miniserde::de::{Deserialize, Map, Seq, Visitor};
use miniserde::Result as MiniResult;

use crate::proto::json::{depth_exceeds, FieldError, JsonError};
use crate::proto::limits::MAX_JSON_DEPTH;

/// The kind a field must have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    #[default]
    Str,
    /// An array of strings, at most this many.
    Strings(usize),
    /// `true`/`false`, or the numbers 1/0 as Perl peers send them.
    Flag,
    /// An integer (a float with no fraction counts).
    Int,
    /// An integer, or a string of digits (the Perl pairing client's `port`).
    IntOrDigits,
}

/// A value read for a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// From [`Kind::Str`].
    Str(String),
    /// From [`Kind::Strings`].
    Strings(Vec<String>),
    /// From [`Kind::Flag`].
    Flag(bool),
    /// From [`Kind::Int`] and [`Kind::IntOrDigits`].
    Int(i64),
}

/// A message read with [`read`]: its fields and how to store a value.
/// `null` and absent fields are never stored, so `Default` is the
/// message with every field absent.
pub trait Message: Default {
    /// The keys this message reads, with their kinds.
    const FIELDS: &'static [(&'static str, Kind)];

    /// Stores the value read for `field` (one of [`Message::FIELDS`], with
    /// a value of its kind).
    fn set(&mut self, field: &'static str, value: Val);
}

/// Why a body could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Not a JSON object.
    Json(JsonError),
    /// A field of the wrong kind.
    Field(FieldError),
}

/// Reads `bytes` as the JSON object `T`, building no value tree.
pub fn read<T: Message>(bytes: &[u8]) -> Result<T, ReadError> {
    if depth_exceeds(bytes, MAX_JSON_DEPTH) {
        return Err(ReadError::Json(JsonError::TooDeep {
            limit: MAX_JSON_DEPTH,
        }));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ReadError::Json(JsonError::Invalid))?;
    if !text.trim_start().starts_with('{') {
        // Valid JSON of another shape, or garbage: tell them apart.
        return Err(ReadError::Json(
            match miniserde::json::from_str::<Skip>(text) {
                Ok(_) => JsonError::NotObject,
                Err(_) => JsonError::Invalid,
            },
        ));
    }
    match miniserde::json::from_str::<Read<T>>(text) {
        Ok(Read(Ok(msg))) => Ok(msg),
        Ok(Read(Err(e))) => Err(ReadError::Field(e)),
        Err(_) => Err(ReadError::Json(JsonError::Invalid)),
    }
}

/// Any JSON value, checked and thrown away without allocating.
struct Skip;

impl Deserialize for Skip {
    fn begin(out: &mut Option<Self>) -> &mut dyn Visitor {
        Place::new(out)
    }
}

impl Place<Skip> {
    fn done(&mut self) -> MiniResult<()> {
        self.out = Some(Skip);
        Ok(())
    }
}

impl Visitor for Place<Skip> {
    fn null(&mut self) -> MiniResult<()> {
        self.done()
    }

    fn boolean(&mut self, _: bool) -> MiniResult<()> {
        self.done()
    }

    fn string(&mut self, _: &str) -> MiniResult<()> {
        self.done()
    }

    fn negative(&mut self, _: i64) -> MiniResult<()> {
        self.done()
    }

    fn nonnegative(&mut self, _: u64) -> MiniResult<()> {
        self.done()
    }

    fn float(&mut self, _: f64) -> MiniResult<()> {
        self.done()
    }

    fn seq(&mut self) -> MiniResult<Box<dyn Seq + '_>> {
        self.done()?;
        <dyn Visitor>::ignore().seq()
    }

    fn map(&mut self) -> MiniResult<Box<dyn Map + '_>> {
        self.done()?;
        <dyn Visitor>::ignore().map()
    }
}

/// The result of one read, as miniserde's output place.
struct Read<T>(Result<T, FieldError>);

miniserde::make_place!(Place);

impl<T: Message> Deserialize for Read<T> {
    fn begin(out: &mut Option<Self>) -> &mut dyn Visitor {
        Place::new(out)
    }
}

impl<T: Message> Visitor for Place<Read<T>> {
    fn map(&mut self) -> MiniResult<Box<dyn Map + '_>> {
        Ok(Box::new(Fields {
            msg: T::default(),
            pending: Pending::default(),
            error: None,
            out: &mut self.out,
        }))
    }
}

/// The object being read: the message so far and the field in progress.
struct Fields<'a, T> {
    msg: T,
    pending: Pending,
    /// The first field of the wrong kind; later values are skipped.
    error: Option<FieldError>,
    out: &'a mut Option<Read<T>>,
}

impl<T: Message> Fields<'_, T> {
    /// Moves the finished field's value into the message.
    fn commit(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let Some(field) = pending.field else { return };
        match (pending.bad, pending.value) {
            (Some(expected), _) => {
                self.error.get_or_insert(FieldError { field, expected });
            }
            (None, Some(value)) => self.msg.set(field, value),
            (None, None) => {}
        }
    }
}

impl<T: Message> Map for Fields<'_, T> {
    fn key(&mut self, k: &str) -> MiniResult<&mut dyn Visitor> {
        self.commit();
        if self.error.is_some() {
            return Ok(<dyn Visitor>::ignore());
        }
        match T::FIELDS.iter().find(|(name, _)| *name == k) {
            Some(&(name, kind)) => {
                self.pending = Pending {
                    field: Some(name),
                    kind,
                    ..Pending::default()
                };
                Ok(&mut self.pending)
            }
            None => Ok(<dyn Visitor>::ignore()),
        }
    }

    fn finish(&mut self) -> MiniResult<()> {
        self.commit();
        let msg = std::mem::take(&mut self.msg);
        *self.out = Some(Read(match self.error.take() {
            Some(e) => Err(e),
            None => Ok(msg),
        }));
        Ok(())
    }
}

/// One field's value while it is read.
#[derive(Default)]
struct Pending {
    field: Option<&'static str>,
    kind: Kind,
    value: Option<Val>,
    /// Set when the value is of the wrong kind: what it should have been.
    bad: Option<&'static str>,
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Strings(_) => "an array of strings",
        Kind::Flag => "true, false, 1 or 0",
        Kind::Int => "an integer",
        Kind::IntOrDigits => "an integer or a string of digits",
    }
}

impl Pending {
    fn wrong(&mut self) -> MiniResult<()> {
        self.bad = Some(expected(self.kind));
        Ok(())
    }

    fn number(&mut self, n: Option<i64>) -> MiniResult<()> {
        match (self.kind, n) {
            (Kind::Flag, Some(0)) => self.value = Some(Val::Flag(false)),
            (Kind::Flag, Some(1)) => self.value = Some(Val::Flag(true)),
            (Kind::Int | Kind::IntOrDigits, Some(n)) => self.value = Some(Val::Int(n)),
            _ => return self.wrong(),
        }
        Ok(())
    }
}

impl Visitor for Pending {
    fn null(&mut self) -> MiniResult<()> {
        Ok(())
    }

    fn boolean(&mut self, b: bool) -> MiniResult<()> {
        match self.kind {
            Kind::Flag => {
                self.value = Some(Val::Flag(b));
                Ok(())
            }
            _ => self.wrong(),
        }
    }

    fn string(&mut self, s: &str) -> MiniResult<()> {
        match self.kind {
            Kind::Str => self.value = Some(Val::Str(s.to_string())),
            Kind::IntOrDigits => match s.trim().parse::<i64>() {
                Ok(n) => self.value = Some(Val::Int(n)),
                Err(_) => return self.wrong(),
            },
            _ => return self.wrong(),
        }
        Ok(())
    }

    fn negative(&mut self, n: i64) -> MiniResult<()> {
        self.number(Some(n))
    }

    fn nonnegative(&mut self, n: u64) -> MiniResult<()> {
        self.number(i64::try_from(n).ok())
    }

    fn float(&mut self, f: f64) -> MiniResult<()> {
        let integral = (f.fract() == 0.0 && f.abs() < 9e15).then_some(f as i64);
        self.number(integral)
    }

    fn seq(&mut self) -> MiniResult<Box<dyn Seq + '_>> {
        match self.kind {
            Kind::Strings(max) => Ok(Box::new(StringsSeq {
                items: Vec::new(),
                max,
                element: Element::default(),
                pending: self,
            })),
            _ => {
                self.wrong()?;
                <dyn Visitor>::ignore().seq()
            }
        }
    }

    fn map(&mut self) -> MiniResult<Box<dyn Map + '_>> {
        self.wrong()?;
        <dyn Visitor>::ignore().map()
    }
}

/// An array of strings being read, up to `max` items.
struct StringsSeq<'a> {
    items: Vec<String>,
    max: usize,
    element: Element,
    pending: &'a mut Pending,
}

/// One element of a string array.
#[derive(Default)]
struct Element {
    value: Option<String>,
    bad: bool,
}

impl StringsSeq<'_> {
    fn take_element(&mut self) {
        let element = std::mem::take(&mut self.element);
        if element.bad {
            self.pending.bad = Some(expected(self.pending.kind));
        } else if let Some(s) = element.value {
            if self.items.len() < self.max {
                self.items.push(s);
            } else {
                self.pending.bad = Some("a shorter array (too many items)");
            }
        }
    }
}

impl Seq for StringsSeq<'_> {
    fn element(&mut self) -> MiniResult<&mut dyn Visitor> {
        self.take_element();
        if self.pending.bad.is_some() {
            return Ok(<dyn Visitor>::ignore());
        }
        Ok(&mut self.element)
    }

    fn finish(&mut self) -> MiniResult<()> {
        self.take_element();
        if self.pending.bad.is_none() {
            self.pending.value = Some(Val::Strings(std::mem::take(&mut self.items)));
        }
        Ok(())
    }
}

impl Visitor for Element {
    fn null(&mut self) -> MiniResult<()> {
        self.bad = true;
        Ok(())
    }

    fn boolean(&mut self, _: bool) -> MiniResult<()> {
        self.null()
    }

    fn string(&mut self, s: &str) -> MiniResult<()> {
        self.value = Some(s.to_string());
        Ok(())
    }

    fn negative(&mut self, _: i64) -> MiniResult<()> {
        self.null()
    }

    fn nonnegative(&mut self, _: u64) -> MiniResult<()> {
        self.null()
    }

    fn float(&mut self, _: f64) -> MiniResult<()> {
        self.null()
    }

    fn seq(&mut self) -> MiniResult<Box<dyn Seq + '_>> {
        self.bad = true;
        <dyn Visitor>::ignore().seq()
    }

    fn map(&mut self) -> MiniResult<Box<dyn Map + '_>> {
        self.bad = true;
        <dyn Visitor>::ignore().map()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    struct Probe {
        name: Option<String>,
        list: Option<Vec<String>>,
        on: Option<bool>,
        n: Option<i64>,
        port: Option<i64>,
    }

    impl Message for Probe {
        const FIELDS: &'static [(&'static str, Kind)] = &[
            ("name", Kind::Str),
            ("list", Kind::Strings(3)),
            ("on", Kind::Flag),
            ("n", Kind::Int),
            ("port", Kind::IntOrDigits),
        ];

        fn set(&mut self, field: &'static str, value: Val) {
            match (field, value) {
                ("name", Val::Str(s)) => self.name = Some(s),
                ("list", Val::Strings(l)) => self.list = Some(l),
                ("on", Val::Flag(b)) => self.on = Some(b),
                ("n", Val::Int(n)) => self.n = Some(n),
                ("port", Val::Int(n)) => self.port = Some(n),
                _ => {}
            }
        }
    }

    fn field_of(text: &str) -> &'static str {
        match read::<Probe>(text.as_bytes()) {
            Err(ReadError::Field(e)) => e.field,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn known_fields_are_typed_and_unknown_ones_skipped() {
        let p: Probe = read(
            br#"{"name":"a","list":["x","y"],"on":1,"n":-3,"port":"7450","junk":[[[{"a":[1]}]]]}"#,
        )
        .unwrap();
        assert_eq!(p.name.as_deref(), Some("a"));
        assert_eq!(p.list, Some(vec!["x".into(), "y".into()]));
        assert_eq!((p.on, p.n, p.port), (Some(true), Some(-3), Some(7450)));
        assert_eq!(
            read::<Probe>(br#"{"name":null}"#).unwrap(),
            Probe::default()
        );
    }

    #[test]
    fn a_field_of_the_wrong_kind_is_named() {
        assert_eq!(field_of(r#"{"name":1}"#), "name");
        assert_eq!(field_of(r#"{"name":{"a":1}}"#), "name");
        assert_eq!(field_of(r#"{"list":"x"}"#), "list");
        assert_eq!(field_of(r#"{"list":["x",1]}"#), "list");
        assert_eq!(field_of(r#"{"list":["a","b","c","d"]}"#), "list");
        assert_eq!(field_of(r#"{"on":"false"}"#), "on");
        assert_eq!(field_of(r#"{"on":2}"#), "on");
        assert_eq!(field_of(r#"{"n":1.5}"#), "n");
        assert_eq!(field_of(r#"{"port":"x"}"#), "port");
        // The first wrong field wins; the body must still be valid JSON.
        assert_eq!(field_of(r#"{"on":"x","name":1}"#), "on");
        assert_eq!(
            read::<Probe>(br#"{"name":1,"#),
            Err(ReadError::Json(JsonError::Invalid))
        );
    }

    #[test]
    fn bodies_that_are_not_objects_are_told_apart() {
        assert_eq!(
            read::<Probe>(b"[1]"),
            Err(ReadError::Json(JsonError::NotObject))
        );
        assert_eq!(
            read::<Probe>(b"nope"),
            Err(ReadError::Json(JsonError::Invalid))
        );
        assert_eq!(
            read::<Probe>(&[0xff]),
            Err(ReadError::Json(JsonError::Invalid))
        );
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            read::<Probe>(deep.as_bytes()),
            Err(ReadError::Json(JsonError::TooDeep { .. }))
        ));
    }
}
