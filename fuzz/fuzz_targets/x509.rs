//! Certificate and CSR inspection in `pki`: `cert_info_der`, `cert_info_pem`,
//! `pem_certs`, `check_csr`, `canonical_serial` and `normalise_fingerprint`.
//!
//! The input is used three ways: as DER (so the mutator works on ASN.1
//! directly), as that DER wrapped in a `CERTIFICATE` and a
//! `CERTIFICATE REQUEST` PEM block, and as text. Nothing may panic; a PEM
//! block we write reads back to the same DER; facts read from a
//! certificate are in the canonical forms the text normalisers produce;
//! the normalisers are idempotent.
#![no_main]

use ctrl_exec::pki::{
    canonical_serial, cert_info_der, cert_info_pem, check_csr, normalise_fingerprint, pem_certs,
    time_valid, verify_issued_by,
};
use libfuzzer_sys::fuzz_target;

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_serial(text: &str) {
    if let Some(s) = canonical_serial(text) {
        assert!(is_lower_hex(&s), "serial {s:?}");
        assert!(s == "0" || !s.starts_with('0'), "leading zero in {s:?}");
        assert_eq!(
            canonical_serial(&s).as_deref(),
            Some(s.as_str()),
            "not idempotent"
        );
    }
}

fn check_fingerprint(text: &str) {
    if let Some(h) = normalise_fingerprint(text) {
        assert!(h.len() == 64 && is_lower_hex(&h), "fingerprint {h:?}");
        assert_eq!(normalise_fingerprint(&h).as_deref(), Some(h.as_str()));
        let prefixed = format!("sha256:{h}");
        assert_eq!(
            normalise_fingerprint(&prefixed).as_deref(),
            Some(h.as_str())
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // DER.
    let info = cert_info_der(data);
    if let Ok(i) = &info {
        assert_eq!(
            canonical_serial(&i.serial).as_deref(),
            Some(i.serial.as_str())
        );
        let fp = i
            .fingerprint
            .strip_prefix("sha256:")
            .expect("fingerprint prefix");
        assert_eq!(normalise_fingerprint(&i.fingerprint).as_deref(), Some(fp));
        assert_eq!(i.spki_sha256.len(), 64);
        let _ = time_valid(i, 0);
        let _ = verify_issued_by(data, data);
    }

    // The same DER in PEM blocks.
    let cert_pem = pem("CERTIFICATE", data);
    let certs = pem_certs(&cert_pem);
    if !data.is_empty() {
        assert_eq!(certs, vec![data.to_vec()], "PEM block did not read back");
    }
    match (&info, cert_info_pem(&cert_pem)) {
        (Ok(a), Ok(b)) => assert_eq!(a, &b),
        (Err(_), Err(_)) => {}
        (a, b) if !data.is_empty() => panic!("der and pem disagree: {a:?} / {b:?}"),
        _ => {}
    }
    let csr_pem = pem("CERTIFICATE REQUEST", data);
    if let Ok(csr) = check_csr(&csr_pem, None) {
        assert!(!csr.cn.is_empty());
        assert!(check_csr(&csr_pem, Some(&csr.cn)).is_ok());
    }

    // Text.
    let text = String::from_utf8_lossy(data);
    for der in pem_certs(&text) {
        let _ = cert_info_der(&der);
    }
    let _ = cert_info_pem(&text);
    if let Err(e) = check_csr(&text, None) {
        let _ = e.to_string();
    }
    check_serial(&text);
    check_fingerprint(&text);
});
