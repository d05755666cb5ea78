//! HTTP/1.x head parsers: `parse_request_head`, `parse_response_head` and
//! `body_length`. Nothing may panic, and a parsed head must obey the
//! documented shape: names lower-cased tokens, values trimmed with no
//! control bytes but tab, the head ends on a line end, the bytes after it
//! do not change it, and every strict prefix of it is "incomplete" (so a
//! head split across reads parses the same).
#![no_main]

use ctrl_exec::net::http::{body_length, parse_request_head, parse_response_head, HttpError};
use ctrl_exec::net::limits::{MAX_BODY_BYTES, MAX_HEADERS};
use libfuzzer_sys::fuzz_target;

const HEADER_LIMITS: [usize; 4] = [0, 1, 3, MAX_HEADERS];
const BODY_LIMITS: [usize; 3] = [0, MAX_BODY_BYTES, usize::MAX];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_headers(headers: &[(String, String)], max: usize) {
    assert!(
        headers.len() <= max,
        "{} headers over limit {max}",
        headers.len()
    );
    for (name, value) in headers {
        assert!(!name.is_empty());
        assert!(name.bytes().all(is_tchar), "header name {name:?}");
        assert_eq!(name, &name.to_ascii_lowercase());
        assert_eq!(value.trim_matches([' ', '\t']), value, "value not trimmed");
        assert!(
            !value.chars().any(|c| c != '\t' && c.is_ascii_control()),
            "control byte in value {value:?}"
        );
    }
    for max_body in BODY_LIMITS {
        match body_length(headers, max_body) {
            Ok(len) => assert!(len <= max_body),
            Err(HttpError::BodyTooLarge { declared }) => {
                assert!(usize::try_from(declared).map_or(true, |d| d > max_body))
            }
            Err(e) => {
                assert_eq!(e.status(), 400, "{e}");
            }
        }
    }
}

fn check_error(e: &HttpError) {
    let _ = e.to_string();
    assert!(matches!(e.status(), 400 | 413 | 431), "{e}: {}", e.status());
}

/// Strict prefixes worth trying: a few, not all (that would be quadratic).
fn prefixes(data: &[u8], n: usize) -> impl Iterator<Item = usize> {
    let salt = data.first().copied().unwrap_or(0) as usize;
    [
        0,
        n / 2,
        n.saturating_sub(1),
        n.saturating_sub(2),
        salt % n.max(1),
    ]
    .into_iter()
    .filter(move |&k| k < n)
}

fuzz_target!(|data: &[u8]| {
    for max in HEADER_LIMITS {
        match parse_request_head(data, max) {
            Ok(Some((head, n))) => {
                assert!(n > 0 && n <= data.len());
                assert_eq!(data[n - 1], b'\n');
                assert!(!head.method.is_empty());
                assert!(head.method.bytes().all(|b| b.is_ascii_uppercase()));
                assert!(!head.target.is_empty());
                assert!(head.target.bytes().all(|b| b.is_ascii_graphic()));
                assert!(head.target.starts_with(head.path()));
                check_headers(&head.headers, max);
                for (name, _) in &head.headers {
                    assert!(head.header(name).is_some());
                }
                let again = parse_request_head(&data[..n], max);
                assert_eq!(again.ok().flatten(), Some((head.clone(), n)));
                for k in prefixes(data, n) {
                    let r = parse_request_head(&data[..k], max);
                    assert!(matches!(r, Ok(None)), "prefix {k}/{n}: {r:?}");
                }
            }
            Ok(None) => {}
            Err(e) => check_error(&e),
        }
        match parse_response_head(data, max) {
            Ok(Some((status, headers, n))) => {
                assert!(n > 0 && n <= data.len());
                assert_eq!(data[n - 1], b'\n');
                assert!((100..=999).contains(&status), "status {status}");
                check_headers(&headers, max);
                let again = parse_response_head(&data[..n], max);
                assert_eq!(again.ok().flatten(), Some((status, headers.clone(), n)));
                for k in prefixes(data, n) {
                    let r = parse_response_head(&data[..k], max);
                    assert!(matches!(r, Ok(None)), "prefix {k}/{n}: {r:?}");
                }
            }
            Ok(None) => {}
            Err(e) => check_error(&e),
        }
    }
});
