//! The shared reading layer: file reading, `key = value` splitting, the
//! top-level key map with line numbers, and the value parsers (numbers,
//! durations, paths, flags, rate rules) every format uses.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::conf::limits::{
    MAX_CONF_FILE_BYTES, MAX_MESSAGE_CHARS, MAX_RATE_BLOCK_SECS, MAX_RATE_WINDOW_SECS,
};
use crate::conf::{ConfError, ConfWarning, RateRule, WarningKind};

/// The keys one file format knows: those it reads, and those the original
/// accepted that do nothing here (with the reason a warning gives).
pub(super) struct Keys {
    /// Keys the parser reads.
    pub(super) read: &'static [&'static str],
    /// Keys accepted with a warning: (key, why it does nothing).
    pub(super) inert: &'static [(&'static str, &'static str)],
}

/// Top-level `key = value` pairs with the line each came from; later wins.
pub(super) struct Raw<'a> {
    path: &'a Path,
    keys: &'static Keys,
    map: BTreeMap<String, (String, usize)>,
}

impl<'a> Raw<'a> {
    pub(super) fn new(path: &'a Path, keys: &'static Keys) -> Self {
        Raw {
            path,
            keys,
            map: BTreeMap::new(),
        }
    }

    pub(super) fn set(&mut self, key: &str, value: &str, line: usize) {
        self.map.insert(key.to_string(), (value.to_string(), line));
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.get_at(key).map(|(v, _)| v)
    }

    pub(super) fn get_at(&self, key: &str) -> Option<(&str, usize)> {
        // A key read here but missing from the list would be warned about
        // as unknown: the tests, built with debug assertions, catch that.
        debug_assert!(
            self.keys.read.contains(&key),
            "'{key}' is not in Keys::read"
        );
        self.map.get(key).map(|(v, n)| (v.as_str(), *n))
    }

    /// A warning for every key set that is not read: inert ones with their
    /// reason, anything else as unknown (a typo such as `read_timout`).
    pub(super) fn warnings(&self) -> Vec<ConfWarning> {
        let mut out: Vec<ConfWarning> = self
            .map
            .iter()
            .filter(|(k, _)| !self.keys.read.contains(&k.as_str()))
            .map(|(k, (_, line))| {
                let kind = match self.keys.inert.iter().find(|(i, _)| i == k) {
                    Some((_, why)) => WarningKind::Inert(why),
                    None => WarningKind::Unknown,
                };
                ConfWarning::new(self.path, *line, k, kind)
            })
            .collect();
        out.sort_by_key(|w| w.line);
        out
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

    /// A duration in whole seconds in `min..=max`, or `default` when absent.
    pub(super) fn secs(
        &self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfError> {
        self.num(key, default, min, max).map(Duration::from_secs)
    }

    /// A rate rule; `None` when its limit is 0 (that rule is off).
    pub(super) fn rule(&self, key: &str, default: RateRule) -> Result<Option<RateRule>, ConfError> {
        let Some((v, n)) = self.get_at(key) else {
            return Ok((default.limit > 0).then_some(default));
        };
        let rule = RateRule::parse(v).ok_or_else(|| {
            ConfError::at(
                self.path,
                n,
                format!("{key} must be limit/window/block in whole seconds, got '{v}'"),
            )
        })?;
        for (part, secs, max) in [
            ("window", rule.window.as_secs(), MAX_RATE_WINDOW_SECS),
            ("block", rule.block.as_secs(), MAX_RATE_BLOCK_SECS),
        ] {
            if secs > max {
                return Err(ConfError::at(
                    self.path,
                    n,
                    format!("{key} {part} must be at most {max} seconds, got '{v}'"),
                ));
            }
        }
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

/// Reads a config file: at most [`MAX_CONF_FILE_BYTES`], and UTF-8 throughout
/// (a bad byte is reported with its line number).
pub(super) fn read(path: &Path) -> Result<String, ConfError> {
    let cannot = |e: io::Error| ConfError::file(path, format!("cannot read: {e}"));
    let mut bytes = Vec::new();
    // One byte over the cap tells a file of exactly the cap from a larger one.
    let cap = u64::try_from(MAX_CONF_FILE_BYTES).unwrap_or(u64::MAX);
    fs::File::open(path)
        .map_err(cannot)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    text(path, bytes)
}

/// The file's bytes as text, refusing more than [`MAX_CONF_FILE_BYTES`] and
/// any invalid UTF-8 (naming the line it is on).
pub(super) fn text(path: &Path, bytes: Vec<u8>) -> Result<String, ConfError> {
    if bytes.len() > MAX_CONF_FILE_BYTES {
        return Err(ConfError::file(
            path,
            format!("larger than {MAX_CONF_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfError::at(path, line, "not valid UTF-8")
    })
}

/// `s` cut to [`MAX_MESSAGE_CHARS`] characters, with `...` when cut.
pub(super) fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => Cow::Borrowed(s),
        Some((i, _)) => Cow::Owned(format!("{}...", &s[..i])),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::test_support::TempDir;

    #[test]
    fn file_at_the_size_cap_is_read_and_one_byte_more_refused() {
        let t = TempDir::new("sizecap");
        let f = t.0.join("big.conf");
        fs::write(&f, vec![b'#'; MAX_CONF_FILE_BYTES]).unwrap();
        assert_eq!(read(&f).map(|s| s.len()), Ok(MAX_CONF_FILE_BYTES));
        fs::write(&f, vec![b'#'; MAX_CONF_FILE_BYTES + 1]).unwrap();
        assert_eq!(
            read(&f).unwrap_err().to_string(),
            format!("{}: larger than 4194304 bytes", f.display())
        );
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let p = Path::new("a.conf");
        let e = text(p, b"port = 1\n# ok\ncert = \xffx\nkey = k\n".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "a.conf:3: not valid UTF-8");
        let e = text(p, b"\xc3".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "a.conf:1: not valid UTF-8");
        assert_eq!(text(p, "é = 1\n".into()), Ok("é = 1\n".to_string()));
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("short"), "short");
        let exact = "é".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(clip(&exact), exact);
        let long = "é".repeat(MAX_MESSAGE_CHARS + 1);
        assert_eq!(clip(&long), format!("{exact}..."));
    }
}
