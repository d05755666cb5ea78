//! Small helpers over miniserde's dynamic JSON values.
//!
//! The wire carries objects with optional keys and mixed types, so most
//! bodies are built and read as [`Value`]s rather than derived structs.
//! miniserde parses without recursion and has no depth limit to exhaust, so
//! hostile bodies cannot blow the stack. Object keys serialise sorted.

pub use miniserde::json::{Array, Number, Object, Value};

/// Parses `bytes` as one JSON value; `None` for invalid UTF-8 or JSON.
pub fn parse(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    miniserde::json::from_str::<Value>(text).ok()
}

/// Parses `bytes` as a JSON object; `None` for anything else.
pub fn parse_object(bytes: &[u8]) -> Option<Object> {
    match parse(bytes)? {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

/// Serialises a value compactly.
pub fn to_string(value: &Value) -> String {
    miniserde::json::to_string(value)
}

/// Builds an object from `(key, value)` pairs.
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A string value.
pub fn str(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// An integer value.
pub fn int(n: i64) -> Value {
    if n >= 0 {
        Value::Number(Number::U64(n as u64))
    } else {
        Value::Number(Number::I64(n))
    }
}

/// An array of strings.
pub fn str_array<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(items.iter().map(|s| str(s.as_ref())).collect())
}

/// The string at `key`, if the value there is a string.
pub fn get_str<'a>(o: &'a Object, key: &str) -> Option<&'a str> {
    match o.get(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// The integer at `key`, if the value there is an integral number.
pub fn get_i64(o: &Object, key: &str) -> Option<i64> {
    match o.get(key) {
        Some(Value::Number(Number::U64(n))) => i64::try_from(*n).ok(),
        Some(Value::Number(Number::I64(n))) => Some(*n),
        Some(Value::Number(Number::F64(f))) if f.fract() == 0.0 && f.abs() < 9e15 => {
            Some(*f as i64)
        }
        _ => None,
    }
}

/// Perl truthiness of the value at `key`: `true`, a non-zero number, or a
/// non-empty string other than `"0"`.
pub fn truthy(o: &Object, key: &str) -> bool {
    match o.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(Number::U64(n))) => *n != 0,
        Some(Value::Number(Number::I64(n))) => *n != 0,
        Some(Value::Number(Number::F64(f))) => *f != 0.0,
        Some(Value::String(s)) => !s.is_empty() && s != "0",
        Some(Value::Array(_)) | Some(Value::Object(_)) => true,
        _ => false,
    }
}

/// The array at `key` as strings; `Err(())` if it is absent-but-invalid
/// (not an array, or an element that is not a string). Absent gives `Ok(vec![])`.
#[allow(clippy::result_unit_err)]
pub fn get_str_array(o: &Object, key: &str) -> Result<Vec<String>, ()> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(()),
            })
            .collect(),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_round_trip_sorts_keys() {
        let v = object([("b", int(1)), ("a", str("x"))]);
        assert_eq!(to_string(&v), r#"{"a":"x","b":1}"#);
        let o = parse_object(br#"{"n":-3,"s":"v","t":"0"}"#).unwrap();
        assert_eq!(get_i64(&o, "n"), Some(-3));
        assert_eq!(get_str(&o, "s"), Some("v"));
        assert!(!truthy(&o, "t"));
    }

    #[test]
    fn non_objects_and_garbage_are_refused() {
        assert!(parse_object(b"[]").is_none());
        assert!(parse_object(b"{").is_none());
        assert!(parse_object(&[0xff]).is_none());
    }

    #[test]
    fn string_arrays_refuse_other_element_types() {
        let o = parse_object(br#"{"a":["x",1],"b":["y"]}"#).unwrap();
        assert!(get_str_array(&o, "a").is_err());
        assert_eq!(get_str_array(&o, "b").unwrap(), vec!["y".to_string()]);
        assert!(get_str_array(&o, "missing").unwrap().is_empty());
    }
}
