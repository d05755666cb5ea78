//! The pairing edge: a `POST /pair` body through `PairRequest::from_json`,
//! the 6-digit `pki::pairing_code` of its CSR, and the dispatcher's CSR
//! policy `pki::check_csr` on the `csr` string, with and without the
//! expected CN. Nothing may panic; a read request obeys the documented
//! field rules and survives its own `to_json`; a passed CSR names the CN.
#![no_main]

use ctrl_exec::pki::{check_csr, pairing_code};
use ctrl_exec::proto::json;
use ctrl_exec::proto::PairRequest;
use libfuzzer_sys::fuzz_target;

fn check_code(bytes: &[u8]) {
    let code = pairing_code(bytes);
    assert_eq!(code.len(), 6, "{code}");
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
}

fuzz_target!(|data: &[u8]| {
    check_code(data);
    let Ok(o) = json::parse_object(data) else {
        return;
    };
    let req = match PairRequest::from_json(&o) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!req.hostname.is_empty() && !req.csr.is_empty());
    assert_ne!(req.port, Some(0));

    // The host sends `to_json`; the dispatcher must read back the same request.
    let s = json::to_string(&req.to_json());
    let back = json::parse_object(s.as_bytes()).expect("own body parses");
    assert_eq!(PairRequest::from_json(&back).as_ref(), Ok(&req));

    check_code(req.csr.as_bytes());
    match check_csr(&req.csr, Some(&req.hostname)) {
        Ok(csr) => {
            assert_eq!(csr.cn, req.hostname);
            assert_eq!(csr.pem, req.csr);
            assert!(!csr.public_key_der.is_empty());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(csr) = check_csr(&req.csr, None) {
        assert!(!csr.cn.is_empty());
        // With its own CN as the expected one it must pass again.
        assert_eq!(check_csr(&req.csr, Some(&csr.cn)).as_ref(), Ok(&csr));
    }
});
