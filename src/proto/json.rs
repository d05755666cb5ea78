//! Where JSON meets the types: a depth-bounded parser and typed field
//! access that names the field when its type is wrong.
//!
//! miniserde parses without recursion, but a parsed value is walked
//! recursively later (cloned, compared), so nesting is bounded here, before
//! miniserde sees the bytes, at [`MAX_JSON_DEPTH`]. A value tree also costs
//! far more than its text (every node is a 32-byte value, every object a
//! B-tree node), so the same scan estimates that cost and refuses a body
//! whose tree would outgrow [`tree_budget`]. Request bodies from peers that
//! are not yet trusted are not parsed into trees at all: see
//! [`crate::proto::read`].

use std::fmt;

pub use miniserde::json::{Array, Number, Object, Value};

use crate::proto::limits::MAX_JSON_DEPTH;

/// Why bytes are not the JSON object a message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not UTF-8, or not JSON.
    Invalid,
    /// Nested deeper than the limit.
    TooDeep {
        /// The limit that was passed.
        limit: usize,
    },
    /// Valid JSON, but not an object.
    NotObject,
    /// Its value tree would cost more memory than the body may.
    TooComplex {
        /// The estimated cost, in bytes.
        cost: usize,
        /// The budget for a body of this size, in bytes.
        budget: usize,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Invalid => f.write_str("invalid JSON"),
            JsonError::TooDeep { limit } => {
                write!(f, "JSON nested deeper than {limit} levels")
            }
            JsonError::NotObject => f.write_str("JSON is not an object"),
            JsonError::TooComplex { cost, budget } => write!(
                f,
                "JSON too complex: its values would take about {cost} bytes, more than the {budget} allowed"
            ),
        }
    }
}

impl std::error::Error for JsonError {}

/// A field of the wrong type (or value) in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON key.
    pub field: &'static str,
    /// What it must be, as a phrase (`"a string"`, `"an array of strings"`).
    pub expected: &'static str,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} must be {}", self.field, self.expected)
    }
}

impl std::error::Error for FieldError {}

/// Parses one JSON value, refusing nesting deeper than [`MAX_JSON_DEPTH`].
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_with_depth(bytes, MAX_JSON_DEPTH)
}

/// Parses one JSON object, refusing nesting deeper than [`MAX_JSON_DEPTH`].
pub fn parse_object(bytes: &[u8]) -> Result<Object, JsonError> {
    match parse(bytes)? {
        Value::Object(o) => Ok(o),
        _ => Err(JsonError::NotObject),
    }
}

/// Parses one JSON value with an explicit depth limit.
pub fn parse_with_depth(bytes: &[u8], limit: usize) -> Result<Value, JsonError> {
    let shape = scan(bytes);
    if shape.depth > limit {
        return Err(JsonError::TooDeep { limit });
    }
    let (cost, budget) = (shape.tree_cost(), tree_budget(bytes.len()));
    if cost > budget {
        return Err(JsonError::TooComplex { cost, budget });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Invalid)?;
    miniserde::json::from_str::<Value>(text).map_err(|_| JsonError::Invalid)
}

/// What a linear scan learns of a JSON text, without parsing it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Deepest bracket nesting.
    depth: usize,
    /// Values, roughly: containers opened plus elements separated.
    values: usize,
    /// Objects opened.
    objects: usize,
}

impl Shape {
    /// Estimated bytes of the value tree, strings aside (they are at most
    /// the body's own size again).
    fn tree_cost(&self) -> usize {
        self.values
            .saturating_mul(VALUE_COST_BYTES)
            .saturating_add(self.objects.saturating_mul(OBJECT_COST_BYTES))
    }
}

/// Bytes one parsed value costs: a 32-byte value plus room its array grew
/// into.
const VALUE_COST_BYTES: usize = 64;
/// Bytes one parsed object costs beyond its values: one B-tree leaf of 11
/// keys and values.
const OBJECT_COST_BYTES: usize = 640;

/// The most a value tree parsed from `len` bytes may cost: 8 times the
/// text, and at least [`MIN_TREE_BUDGET_BYTES`] so small records never
/// hit it. Real messages (records, capabilities with a thousand scripts)
/// stay under 7 times; hostile ones (a megabyte of `[0,0,…]` or `{"a":0}`
/// objects) would take 30-80 times and are refused.
pub fn tree_budget(len: usize) -> usize {
    len.saturating_mul(8).max(MIN_TREE_BUDGET_BYTES)
}

/// The smallest budget, in bytes: 1 MiB.
const MIN_TREE_BUDGET_BYTES: usize = 1 << 20;

/// Scans brackets, commas and strings; malformed input is left for the
/// parser to refuse.
fn scan(bytes: &[u8]) -> Shape {
    let mut shape = Shape {
        values: 1,
        ..Shape::default()
    };
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                shape.depth = shape.depth.max(depth);
                shape.values += 1;
                shape.objects += usize::from(b == b'{');
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => shape.values += 1,
            _ => {}
        }
    }
    shape
}

/// Whether brackets outside strings nest deeper than `limit`.
pub(crate) fn depth_exceeds(bytes: &[u8], limit: usize) -> bool {
    scan(bytes).depth > limit
}

/// Serialises a value compactly.
pub fn to_string(value: &Value) -> String {
    miniserde::json::to_string(value)
}

/// Typed read access to the fields of one received object.
///
/// Absent and `null` read as `None` (the original's "missing key means
/// default"); any other type than the one asked for is a [`FieldError`].
#[derive(Clone, Copy)]
pub struct Fields<'a>(pub &'a Object);

impl<'a> Fields<'a> {
    fn present(&self, key: &str) -> Option<&'a Value> {
        match self.0.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A string field.
    pub fn str(&self, key: &'static str) -> Result<Option<&'a str>, FieldError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(FieldError {
                field: key,
                expected: "a string",
            }),
        }
    }

    /// A string field, empty when absent.
    pub fn string(&self, key: &'static str) -> Result<String, FieldError> {
        Ok(self.str(key)?.unwrap_or("").to_string())
    }

    /// An array of strings.
    pub fn strings(&self, key: &'static str) -> Result<Option<Vec<String>>, FieldError> {
        let wrong = FieldError {
            field: key,
            expected: "an array of strings",
        };
        match self.present(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(wrong.clone()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong),
        }
    }

    /// An integer field (a float with no fraction counts, as Perl writes
    /// some numbers that way).
    pub fn int(&self, key: &'static str) -> Result<Option<i64>, FieldError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => int_of(v).map(Some).ok_or(FieldError {
                field: key,
                expected: "an integer",
            }),
        }
    }

    /// A boolean field; the numbers 0 and 1 count, as Perl peers send them.
    pub fn flag(&self, key: &'static str) -> Result<Option<bool>, FieldError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => match int_of(v) {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(FieldError {
                    field: key,
                    expected: "true, false, 1 or 0",
                }),
            },
        }
    }

    /// An object field.
    pub fn object(&self, key: &'static str) -> Result<Option<&'a Object>, FieldError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(FieldError {
                field: key,
                expected: "an object",
            }),
        }
    }

    /// A field of any type, as it came.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.present(key)
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(Number::U64(n)) => i64::try_from(*n).ok(),
        Value::Number(Number::I64(n)) => Some(*n),
        Value::Number(Number::F64(f)) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
        _ => None,
    }
}

/// Builds one outgoing object; keys are written sorted (miniserde's
/// `Object` is a `BTreeMap`), optional fields only when present.
#[derive(Default)]
pub struct Builder(Object);

impl Builder {
    /// An empty object.
    pub fn new() -> Builder {
        Builder(Object::new())
    }

    /// Sets a string.
    pub fn str(mut self, key: &str, value: impl Into<String>) -> Builder {
        self.0.insert(key.to_string(), Value::String(value.into()));
        self
    }

    /// Sets a string when there is one.
    pub fn opt_str(self, key: &str, value: Option<impl Into<String>>) -> Builder {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// Sets an integer.
    pub fn int(mut self, key: &str, value: i64) -> Builder {
        self.0.insert(key.to_string(), int(value));
        self
    }

    /// Sets an integer when there is one.
    pub fn opt_int(self, key: &str, value: Option<i64>) -> Builder {
        match value {
            Some(v) => self.int(key, v),
            None => self,
        }
    }

    /// Sets a boolean.
    pub fn bool(mut self, key: &str, value: bool) -> Builder {
        self.0.insert(key.to_string(), Value::Bool(value));
        self
    }

    /// Sets `true` only when `value` is (an additive flag the original
    /// never sends).
    pub fn flag(self, key: &str, value: bool) -> Builder {
        if value {
            self.bool(key, true)
        } else {
            self
        }
    }

    /// Sets an array of strings.
    pub fn strings<S: AsRef<str>>(mut self, key: &str, items: &[S]) -> Builder {
        self.0.insert(key.to_string(), strings(items));
        self
    }

    /// Sets any value.
    pub fn value(mut self, key: &str, value: Value) -> Builder {
        self.0.insert(key.to_string(), value);
        self
    }

    /// The object.
    pub fn object(self) -> Object {
        self.0
    }

    /// The object as a value.
    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}

/// A string value.
pub fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// An array of strings.
pub fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(items.iter().map(|s| string(s.as_ref())).collect())
}

/// An integer value.
pub fn int(n: i64) -> Value {
    if n >= 0 {
        Value::Number(Number::U64(n as u64))
    } else {
        Value::Number(Number::I64(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_bounded_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse(deep.as_bytes()).err(),
            Some(JsonError::TooDeep {
                limit: MAX_JSON_DEPTH
            })
        );
        let at_limit = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(parse(at_limit.as_bytes()).is_ok());
        let one_over = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert!(parse(one_over.as_bytes()).is_err());
        // Brackets inside strings do not count, nor do escaped quotes end them.
        let text = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert!(parse_object(text.as_bytes()).is_ok());
    }

    #[test]
    fn wide_trees_are_bounded_by_their_cost() {
        let wide = format!("[{}0]", "0,".repeat(600_000));
        assert!(matches!(
            parse(wide.as_bytes()),
            Err(JsonError::TooComplex { .. })
        ));
        let objects = format!("[{}{{}}]", "{\"a\":0},".repeat(200_000));
        assert!(matches!(
            parse(objects.as_bytes()),
            Err(JsonError::TooComplex { .. })
        ));
        // A large real message: long strings, few nodes.
        let output = format!("{{\"stdout\":\"{}\",\"exit\":0}}", "x".repeat(4 << 20));
        assert!(parse_object(output.as_bytes()).is_ok());
        // A capabilities-like list of a thousand small objects.
        let scripts: Vec<String> = (0..1000)
            .map(|i| format!("{{\"name\":\"s{i}\",\"path\":\"/opt/s/s{i}.sh\",\"executable\":true,\"profile\":\"default\"}}"))
            .collect();
        let caps = format!("{{\"scripts\":[{}]}}", scripts.join(","));
        assert!(parse_object(caps.as_bytes()).is_ok());
    }

    #[test]
    fn garbage_and_non_objects_are_refused() {
        assert_eq!(parse_object(b"[]").err(), Some(JsonError::NotObject));
        assert_eq!(parse_object(b"{").err(), Some(JsonError::Invalid));
        assert_eq!(parse_object(&[0xff]).err(), Some(JsonError::Invalid));
    }

    #[test]
    fn fields_name_the_key_of_a_wrong_type() {
        let o =
            parse_object(br#"{"s":"v","n":-3,"a":["x",1],"b":"false","o":{},"z":null}"#).unwrap();
        let f = Fields(&o);
        assert_eq!(f.str("s").unwrap(), Some("v"));
        assert_eq!(f.str("z").unwrap(), None);
        assert_eq!(f.str("missing").unwrap(), None);
        assert_eq!(f.int("n").unwrap(), Some(-3));
        assert_eq!(f.str("n").unwrap_err().to_string(), "n must be a string");
        assert_eq!(
            f.strings("a").unwrap_err().to_string(),
            "a must be an array of strings"
        );
        assert_eq!(f.flag("b").unwrap_err().field, "b");
        assert_eq!(f.flag("o").unwrap_err().field, "o");
        assert!(f.object("o").unwrap().is_some());
    }

    #[test]
    fn flags_take_booleans_and_zero_or_one() {
        let o = parse_object(br#"{"t":true,"f":false,"one":1,"zero":0,"two":2}"#).unwrap();
        let f = Fields(&o);
        assert_eq!(f.flag("t").unwrap(), Some(true));
        assert_eq!(f.flag("f").unwrap(), Some(false));
        assert_eq!(f.flag("one").unwrap(), Some(true));
        assert_eq!(f.flag("zero").unwrap(), Some(false));
        assert!(f.flag("two").is_err());
    }

    #[test]
    fn builder_omits_absent_options_and_sorts_keys() {
        let v = Builder::new()
            .str("b", "x")
            .int("a", -1)
            .opt_str("c", None::<String>)
            .flag("d", false)
            .flag("e", true)
            .build();
        assert_eq!(to_string(&v), r#"{"a":-1,"b":"x","e":true}"#);
    }
}
