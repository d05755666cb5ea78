//! The shared reading layer: file reading, `key = value` splitting, the
//! top-level key map with line numbers, and the value parsers (numbers,
//! durations, paths, flags, rate rules) every format uses.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::conf::{ConfError, RateRule};

/// Top-level `key = value` pairs with the line each came from; later wins.
pub(super) struct Raw<'a> {
    path: &'a Path,
    map: BTreeMap<String, (String, usize)>,
}

impl<'a> Raw<'a> {
    pub(super) fn new(path: &'a Path) -> Self {
        Raw {
            path,
            map: BTreeMap::new(),
        }
    }

    pub(super) fn set(&mut self, key: &str, value: &str, line: usize) {
        self.map.insert(key.to_string(), (value.to_string(), line));
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|(v, _)| v.as_str())
    }

    pub(super) fn get_at(&self, key: &str) -> Option<(&str, usize)> {
        self.map.get(key).map(|(v, n)| (v.as_str(), *n))
    }

    /// Resolves a path value against the config file's directory.
    pub(super) fn path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(|v| resolve(self.path, v))
    }

    pub(super) fn path_or(&self, key: &str, default: &str) -> PathBuf {
        self.path(key).unwrap_or_else(|| PathBuf::from(default))
    }

    pub(super) fn required_path(&self, key: &str) -> Result<PathBuf, ConfError> {
        self.path(key)
            .ok_or_else(|| ConfError::file(self.path, format!("missing required key '{key}'")))
    }

    /// A whole number in `min..=max`, or `default` when the key is absent.
    pub(super) fn num<T>(&self, key: &str, default: T, min: T, max: T) -> Result<T, ConfError>
    where
        T: FromStr + PartialOrd + Copy + fmt::Display + Bounded,
    {
        let Some((v, n)) = self.get_at(key) else {
            return Ok(default);
        };
        match parse_uint::<T>(v) {
            Some(x) if x >= min && x <= max => Ok(x),
            _ if T::OPEN_ENDED && max == T::MAX => Err(ConfError::at(
                self.path,
                n,
                format!("{key} must be a number of at least {min}, got '{v}'"),
            )),
            _ => Err(ConfError::at(
                self.path,
                n,
                format!("{key} must be a number {min}-{max}, got '{v}'"),
            )),
        }
    }

    pub(super) fn secs(&self, key: &str, default: u64, min: u64) -> Result<Duration, ConfError> {
        self.num(key, default, min, u64::MAX)
            .map(Duration::from_secs)
    }

    /// A rate rule; `None` when its limit is 0 (that rule is off).
    pub(super) fn rule(&self, key: &str, default: RateRule) -> Result<Option<RateRule>, ConfError> {
        let rule = match self.get_at(key) {
            None => default,
            Some((v, n)) => RateRule::parse(v).ok_or_else(|| {
                ConfError::at(
                    self.path,
                    n,
                    format!("{key} must be limit/window/block in whole seconds, got '{v}'"),
                )
            })?,
        };
        Ok((rule.limit > 0).then_some(rule))
    }
}

/// Upper bound of the integer types config numbers parse into.
pub(super) trait Bounded {
    const MAX: Self;
    /// Whether `MAX` is too large to be worth printing as a range end.
    const OPEN_ENDED: bool = true;
}

impl Bounded for u16 {
    const MAX: Self = u16::MAX;
    const OPEN_ENDED: bool = false;
}
impl Bounded for u32 {
    const MAX: Self = u32::MAX;
}
impl Bounded for u64 {
    const MAX: Self = u64::MAX;
}
impl Bounded for usize {
    const MAX: Self = usize::MAX;
}

pub(super) fn read(path: &Path) -> Result<String, ConfError> {
    fs::read_to_string(path).map_err(|e| ConfError::file(path, format!("cannot read: {e}")))
}

pub(super) fn resolve(conf: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match conf.parent() {
        Some(dir) => dir.join(p),
        None => p.to_path_buf(),
    }
}

/// Splits `key = value` at the first `=`, trimming both; the value must be non-empty.
pub(super) fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once('=')?;
    let (k, v) = (k.trim(), v.trim());
    (!k.is_empty() && !v.is_empty()).then_some((k, v))
}

/// `\w+` (ASCII).
pub(super) fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Digits only (no sign, no spaces), in range for `T`.
pub(super) fn parse_uint<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The original's flag test: the value starts with `1` or `y` (any case).
pub(super) fn starts_truthy(v: &str) -> bool {
    matches!(v.as_bytes().first(), Some(b'1' | b'y' | b'Y'))
}

/// `1`, `y`, `yes`, `true` or `on` (any case).
pub(super) fn is_truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "y" | "yes" | "true" | "on"
    )
}
