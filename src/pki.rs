//! Keys, certificates and CSRs: everything ctrl-exec does with X.509, without shelling out.
//!
//! Owns: key generation (ECDSA P-256, PKCS#8 PEM), the CA (`create_ca`, `sign_csr`,
//! `issue_key_and_cert`), the agent's CSR (`make_csr`), CSR policy (`check_csr`), certificate
//! facts (`cert_info_*`), chain checks (`verify_issued_by`), and the text forms operators and
//! files use for serials and fingerprints (`canonical_serial`, `normalise_fingerprint`) plus the
//! 6-digit pairing code (protocol.md 5.3).
//!
//! Invariants:
//! - The CA decides every field of what it signs (STYLE.md 8). From a CSR it takes only the
//!   verified public key and the CN; requested extensions (a CSR can ask for CA:TRUE) are ignored.
//! - Serials are 128-bit random positive integers, never sequential (protocol.md 6.2 explains
//!   why small sequential serials plus serial-keyed trust are dangerous).
//! - Serial text is minimal lowercase hex; an all-digit string is hex, never decimal (unlike the
//!   Perl `serial_to_hex`, protocol.md 2.4). Callers needing Perl compatibility convert first.
//! - Nothing here reads files, checks the clock implicitly (except `now` for validity windows of
//!   what it issues) or panics on input; every refusal is a `PkiError` naming what was checked.
//!
//! Callers must: pass CSR PEM exactly as received (the pairing code hashes those bytes), and
//! keep private keys out of logs (no error here ever includes key material).

use std::fmt;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::SignatureVerificationAlgorithm;
use rustls::pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo as X509Spki, X509Name, X509Version};

/// Largest CSR PEM accepted, in bytes (the Perl `sign_csr` limit; a P-256 CSR is ~450 bytes,
/// an RSA-4096 one ~1 700).
pub const MAX_CSR_PEM_BYTES: usize = 10_240;

/// Smallest RSA modulus accepted in a CSR, in bits (the Perl limit).
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA key `generate_key_pem_of` makes, in bits: 4096 is what the Perl agent makes;
/// larger keys take minutes to generate on a router and gain nothing here.
const MAX_GENERATED_RSA_BITS: usize = 4096;

/// First line every CSR PEM must start with.
const CSR_PEM_HEADER: &str = "-----BEGIN CERTIFICATE REQUEST-----";

/// Common name of the CA certificate (as the Perl `setup-ca` writes it).
const CA_COMMON_NAME: &str = "ctrl-exec CA";

/// How far back `not_before` is set on everything issued, in seconds: tolerates peers whose
/// clocks run a few minutes slow.
const BACKDATE_SECS: i64 = 5 * 60;

/// Serial length in bytes: 128 bits, as CA/B Forum practice asks (at least 64 random bits).
const SERIAL_BYTES: usize = 16;

const SECS_PER_DAY: i64 = 86_400;

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_CURVE_P256: &str = "1.2.840.10045.3.1.7";
const OID_CURVE_P384: &str = "1.3.132.0.34";

/// Signature algorithms refused in a CSR, with the names the errors use.
const WEAK_SIGNATURE_ALGORITHMS: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.2", "md2WithRSAEncryption"),
    ("1.2.840.113549.1.1.3", "md4WithRSAEncryption"),
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
    ("1.3.14.3.2.29", "sha1WithRSASignature"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-SHA1"),
];

/// DER AlgorithmIdentifier bodies used to wrap PKCS#1 / SEC1 keys into PKCS#8 for ring.
const ALG_ID_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
const ALG_ID_EC_P256: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
const ALG_ID_EC_P384: &[u8] = &[
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];

/// What went wrong in this layer. `Display` is lower case and names what was being handled;
/// callers add the file path or peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkiError {
    /// The system random number generator failed.
    Random,
    /// Generating a new key pair failed.
    KeyGeneration(String),
    /// A PEM input held no usable block of the wanted kind.
    Pem {
        /// What was being read, e.g. `ca certificate`, `private key`.
        what: &'static str,
        /// Why it was refused.
        detail: String,
    },
    /// A DER structure (certificate, CSR, key) did not parse.
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// A private key parsed but is of a kind this build cannot use.
    UnsupportedKey(String),
    /// The CA private key does not belong to the CA certificate.
    CaKeyMismatch,
    /// The CA certificate is not a CA (no basicConstraints CA:TRUE and not X.509 v1).
    NotCa,
    /// Building or signing a certificate or CSR failed.
    Sign {
        /// What was being produced.
        what: &'static str,
        /// rcgen's complaint.
        detail: String,
    },
    /// The CSR PEM is longer than `MAX_CSR_PEM_BYTES`.
    CsrTooLong {
        /// Length received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CSR text does not start with `-----BEGIN CERTIFICATE REQUEST-----`.
    CsrNotPem,
    /// The CSR is signed with MD2/MD4/MD5/SHA-1.
    CsrWeakSignature(String),
    /// The CSR signature algorithm is not one this build can verify.
    CsrUnsupportedSignature(String),
    /// The CSR key is RSA below `MIN_RSA_BITS` (or an unknown-size key).
    CsrKeyTooSmall {
        /// Key type, e.g. `RSA`.
        kind: &'static str,
        /// Key size found.
        bits: usize,
        /// Minimum accepted.
        min: usize,
    },
    /// The CSR key type or curve is not accepted.
    CsrUnsupportedKey(String),
    /// The CSR self-signature does not verify.
    CsrBadSignature,
    /// The CSR subject has no common name.
    CsrNoCommonName,
    /// The CSR subject has more than one common name (ambiguous identity).
    CsrManyCommonNames(usize),
    /// The CSR common name is not a readable string or is empty.
    CsrBadCommonName,
    /// The CSR common name differs from the expected one.
    CsrCommonNameMismatch {
        /// CN found in the CSR.
        got: String,
        /// CN required by the caller.
        expected: String,
    },
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random => write!(f, "system random number generator failed"),
            Self::KeyGeneration(d) => write!(f, "generating key: {d}"),
            Self::Pem { what, detail } => write!(f, "reading {what} pem: {detail}"),
            Self::Parse { what, detail } => write!(f, "parsing {what}: {detail}"),
            Self::UnsupportedKey(d) => write!(f, "unsupported private key: {d}"),
            Self::CaKeyMismatch => {
                write!(f, "ca private key does not match the ca certificate public key")
            }
            Self::NotCa => write!(f, "ca certificate is not a ca (no basicConstraints CA:TRUE)"),
            Self::Sign { what, detail } => write!(f, "signing {what}: {detail}"),
            Self::CsrTooLong { len, max } => {
                write!(f, "csr too long: {len} bytes (maximum {max})")
            }
            Self::CsrNotPem => write!(f, "csr does not start with {CSR_PEM_HEADER}"),
            Self::CsrWeakSignature(alg) => {
                write!(f, "csr signature algorithm {alg} refused (md2/md4/md5/sha-1 are weak)")
            }
            Self::CsrUnsupportedSignature(alg) => {
                write!(f, "csr signature algorithm {alg} unsupported")
            }
            Self::CsrKeyTooSmall { kind, bits, min } => {
                write!(f, "csr key too small: {kind} {bits} bits (minimum {min})")
            }
            Self::CsrUnsupportedKey(d) => write!(
                f,
                "csr key type unsupported: {d} (want RSA >= {MIN_RSA_BITS}, EC P-256/P-384 or Ed25519)"
            ),
            Self::CsrBadSignature => write!(f, "csr self-signature does not verify"),
            Self::CsrNoCommonName => write!(f, "csr subject has no common name"),
            Self::CsrManyCommonNames(n) => {
                write!(f, "csr subject has {n} common names (expected exactly 1)")
            }
            Self::CsrBadCommonName => {
                write!(f, "csr common name is empty or not a readable string")
            }
            Self::CsrCommonNameMismatch { got, expected } => {
                write!(f, "csr common name '{got}' does not match '{expected}'")
            }
        }
    }
}

impl std::error::Error for PkiError {}

/// A CSR that passed `check_csr`: its self-signature verified and its key meets policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// The subject common name (exactly one, non-empty).
    pub cn: String,
    /// The PEM text as received.
    pub pem: String,
    /// The requested public key as SubjectPublicKeyInfo DER.
    pub public_key_der: Vec<u8>,
}

/// Facts about one certificate, as the rest of ctrl-exec compares and prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial as minimal lowercase hex (no leading zeros, `"0"` for zero); see `serial_hex`.
    pub serial: String,
    /// First subject common name, or empty when there is none (or it is not a string).
    pub cn: String,
    /// notBefore as unix seconds.
    pub not_before: i64,
    /// notAfter as unix seconds.
    pub not_after: i64,
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER.
    pub spki_sha256: String,
    /// `sha256:` + lowercase hex SHA-256 of the whole certificate DER.
    pub fingerprint: String,
    /// True when basicConstraints says CA:TRUE (false for v1 certificates, which have none).
    pub is_ca: bool,
}

/// Where a certificate stands in its lifetime at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Not valid yet (a clock behind, or a certificate from the future).
    NotYetValid,
    /// More than half its lifetime left.
    Fresh {
        /// Whole days left.
        days_left: i64,
    },
    /// Less than half its lifetime left: renewal is due (the dispatcher
    /// renews agents from this point, see `control::renew`).
    RenewalDue {
        /// Whole days left.
        days_left: i64,
    },
    /// Past notAfter.
    Expired,
}

impl CertInfo {
    /// Where this certificate stands at unix time `now`.
    pub fn lifetime(&self, now: i64) -> Lifetime {
        let days_left = (self.not_after - now).div_euclid(86_400);
        if now < self.not_before {
            Lifetime::NotYetValid
        } else if now >= self.not_after {
            Lifetime::Expired
        } else if (self.not_after - now) * 2 < self.not_after - self.not_before {
            Lifetime::RenewalDue { days_left }
        } else {
            Lifetime::Fresh { days_left }
        }
    }
}

/// Lowercase hex of `bytes` random bytes from the system RNG (reqids use 8, nonces 16).
///
/// # Panics
/// If the operating system's random source fails, which leaves nothing safe to do.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // A failing getrandom means no secure randomness at all; carrying on with predictable
    // request ids or nonces would be worse than stopping.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("system random number generator failed");
    hex(&buf)
}

/// Generates a new ECDSA P-256 key and returns it as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn generate_key_pem() -> Result<String, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
    Ok(key.serialize_pem())
}

/// The kinds of key `generate_key_pem_of` makes (agent.conf `key_type`, `request-pairing
/// --key-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA P-256: small, fast, the default.
    #[default]
    EcP256,
    /// RSA with this many modulus bits (2048, 3072 or 4096): what a Perl dispatcher's CSR check
    /// accepts (it refuses EC keys, protocol.md 6.2).
    Rsa(usize),
}

impl KeyType {
    /// The words accepted in config and on the command line.
    pub const NAMES: &'static str = "ec, rsa (2048 bits), rsa3072, rsa4096";

    /// Parses `ec`, `rsa`/`rsa2048`, `rsa3072` or `rsa4096` (case-insensitive).
    pub fn parse(text: &str) -> Option<KeyType> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ec" | "ecdsa" | "p256" => Some(KeyType::EcP256),
            "rsa" | "rsa2048" => Some(KeyType::Rsa(2048)),
            "rsa3072" => Some(KeyType::Rsa(3072)),
            "rsa4096" => Some(KeyType::Rsa(4096)),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcP256 => write!(f, "ec"),
            KeyType::Rsa(2048) => write!(f, "rsa"),
            KeyType::Rsa(bits) => write!(f, "rsa{bits}"),
        }
    }
}

/// Generates a new key of `kind` as PKCS#8 PEM.
///
/// RSA keys come from the `rsa` crate (ring cannot generate them) with the operating system's
/// random source, then are loaded by ring, which checks the key's consistency, before they are
/// returned. Measured with the static binary on one x86_64 server core: RSA-2048 0.2-0.6 s,
/// RSA-4096 about 2.5 s; a small router is ten to twenty times slower.
pub fn generate_key_pem_of(kind: KeyType) -> Result<String, PkiError> {
    let bits = match kind {
        KeyType::EcP256 => return generate_key_pem(),
        KeyType::Rsa(bits) => bits,
    };
    if !(MIN_RSA_BITS..=MAX_GENERATED_RSA_BITS).contains(&bits) {
        return Err(PkiError::KeyGeneration(format!(
            "RSA keys of {bits} bits are not offered (2048-{MAX_GENERATED_RSA_BITS})"
        )));
    }
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
        .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
    // PKCS#1 RSAPrivateKey written here with `der_tlv` rather than by the rsa crate's
    // encoders, which would add the `der`/`pkcs1`/`pkcs8` crates' code to the binary; ring
    // parses and checks the result just below.
    let (Some(dp), Some(dq), Some(qinv), [p, q]) =
        (key.dp(), key.dq(), key.crt_coefficient(), key.primes())
    else {
        return Err(PkiError::KeyGeneration(
            "RSA key without two primes and CRT values".into(),
        ));
    };
    let mut body = vec![0x02, 0x01, 0x00]; // version 0 (two primes)
    for n in [key.n(), key.e(), key.d(), p, q, dp, dq, &qinv] {
        let mut be = n.to_bytes_be();
        if be.first().is_some_and(|b| b & 0x80 != 0) {
            be.insert(0, 0); // keep the INTEGER positive
        }
        body.extend(der_tlv(0x02, &be));
    }
    let der = wrap_pkcs8(ALG_ID_RSA, &der_tlv(0x30, &body));
    let pair = KeyPair::try_from(&PrivatePkcs8KeyDer::from(der))
        .map_err(|e| PkiError::KeyGeneration(format!("generated RSA key refused: {e}")))?;
    Ok(pair.serialize_pem())
}

/// Creates a new self-signed CA valid for `days`, returning `(cert_pem, key_pem)`.
///
/// Subject `CN=ctrl-exec CA`; basicConstraints CA:TRUE, pathlen 0, critical; keyUsage
/// keyCertSign, cRLSign, digitalSignature; ECDSA P-256 key; random 128-bit serial; valid from
/// five minutes ago.
pub fn create_ca(days: u32) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_serial_and_validity(&mut params, days)?;
    let cert = params.self_signed(&key).map_err(|e| PkiError::Sign {
        what: "ca certificate",
        detail: e.to_string(),
    })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Generates a new P-256 key and a leaf certificate for `cn` signed by the CA, returning
/// `(cert_pem, key_pem)`. Used for the dispatcher's own certificate; fields as in `sign_csr`.
pub fn issue_key_and_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    cn: &str,
    days: u32,
) -> Result<(String, String), PkiError> {
    let issuer = load_issuer(ca_cert_pem, ca_key_pem)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
    let params = leaf_params(cn, false, days)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| PkiError::Sign {
            what: "certificate",
            detail: e.to_string(),
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Builds a CSR PEM for `key_pem` whose subject is `CN=<cn>` and nothing else (no extensions).
/// Used by agents at pairing and renewal. Accepts the key forms `private_key_der` documents.
pub fn make_csr(key_pem: &str, cn: &str) -> Result<String, PkiError> {
    let key = load_key_pair(key_pem)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(cn);
    let csr = params.serialize_request(&key).map_err(|e| PkiError::Sign {
        what: "csr",
        detail: e.to_string(),
    })?;
    csr.pem().map_err(|e| PkiError::Sign {
        what: "csr",
        detail: e.to_string(),
    })
}

/// Checks a CSR against signing policy and returns what the CA may take from it.
///
/// In order: PEM at most `MAX_CSR_PEM_BYTES` and starting with
/// `-----BEGIN CERTIFICATE REQUEST-----` (leading whitespace allowed); DER parses; signature
/// algorithm not MD2/MD4/MD5/SHA-1; key RSA >= 2048 bits, EC P-256/P-384 or Ed25519; the
/// self-signature verifies; exactly one non-empty CN; when `expected_cn` is given the CN equals
/// it exactly. Each refusal is its own `PkiError` variant.
pub fn check_csr(pem: &str, expected_cn: Option<&str>) -> Result<Csr, PkiError> {
    if pem.len() > MAX_CSR_PEM_BYTES {
        return Err(PkiError::CsrTooLong {
            len: pem.len(),
            max: MAX_CSR_PEM_BYTES,
        });
    }
    if !pem.trim_start().starts_with(CSR_PEM_HEADER) {
        return Err(PkiError::CsrNotPem);
    }
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        PkiError::Pem {
            what: "csr",
            detail: e.to_string(),
        }
    })?;
    let (_, req) =
        X509CertificationRequest::from_der(der.as_ref()).map_err(|e| PkiError::Parse {
            what: "csr",
            detail: e.to_string(),
        })?;

    // Algorithm and key checks come before the signature check so that a weak request gets
    // the precise reason (ring refuses to verify RSA < 2048 at all).
    let sig_oid = req.signature_algorithm.algorithm.to_id_string();
    if let Some((_, name)) = WEAK_SIGNATURE_ALGORITHMS
        .iter()
        .find(|(oid, _)| *oid == sig_oid)
    {
        return Err(PkiError::CsrWeakSignature((*name).to_string()));
    }
    let spki = &req.certification_request_info.subject_pki;
    check_csr_key(spki)?;
    match req.verify_signature() {
        Ok(()) => {}
        Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => {
            return Err(PkiError::CsrUnsupportedSignature(sig_oid))
        }
        Err(_) => return Err(PkiError::CsrBadSignature),
    }

    let cn = single_common_name(&req.certification_request_info.subject)?;
    if let Some(expected) = expected_cn {
        if cn != expected {
            return Err(PkiError::CsrCommonNameMismatch {
                got: cn,
                expected: expected.to_string(),
            });
        }
    }
    Ok(Csr {
        cn,
        pem: pem.to_string(),
        public_key_der: spki.raw.to_vec(),
    })
}

/// Signs a checked CSR with the CA and returns the certificate PEM.
///
/// The CA decides every field: subject `CN=<csr.cn>`; SAN dNSName = cn when it is a valid DNS
/// name (iPAddress when it is an IP literal, none otherwise); basicConstraints CA:FALSE;
/// keyUsage digitalSignature (+ keyEncipherment for RSA keys); EKU serverAuth + clientAuth;
/// random 128-bit serial; valid from five minutes ago for `days`. Nothing else in the request
/// is used. `csr.pem` is re-checked (CN must still equal `csr.cn`) so a hand-built `Csr` cannot
/// smuggle an unverified key.
pub fn sign_csr(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    csr: &Csr,
    days: u32,
) -> Result<String, PkiError> {
    let verified = check_csr(&csr.pem, Some(&csr.cn))?;
    let issuer = load_issuer(ca_cert_pem, ca_key_pem)?;
    let (_, spki) = X509Spki::from_der(&verified.public_key_der).map_err(|e| PkiError::Parse {
        what: "csr public key",
        detail: e.to_string(),
    })?;
    let is_rsa = spki.algorithm.algorithm.to_id_string() == OID_RSA_ENCRYPTION;
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(&verified.public_key_der).map_err(|e| {
            PkiError::Parse {
                what: "csr public key",
                detail: e.to_string(),
            }
        })?;
    let params = leaf_params(&verified.cn, is_rsa, days)?;
    let cert = params
        .signed_by(&public_key, &issuer)
        .map_err(|e| PkiError::Sign {
            what: "certificate",
            detail: e.to_string(),
        })?;
    Ok(cert.pem())
}

/// Facts about a DER certificate. Works for X.509 v1 certificates without extensions.
pub fn cert_info_der(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Parse {
        what: "certificate",
        detail: e.to_string(),
    })?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_string();
    Ok(CertInfo {
        serial: serial_hex(cert.raw_serial()),
        cn,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spki_sha256: sha256_hex(cert.public_key().raw),
        fingerprint: format!("sha256:{}", sha256_hex(der)),
        is_ca: cert.is_ca(),
    })
}

/// Facts about the first `CERTIFICATE` block of a PEM text.
pub fn cert_info_pem(pem: &str) -> Result<CertInfo, PkiError> {
    let der = first_cert(pem, "certificate")?;
    cert_info_der(&der)
}

/// DER of every `CERTIFICATE` block in `pem`, in order. Other blocks are skipped; reading stops
/// at the first malformed block.
pub fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map_while(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}

/// The first private key in `pem`: a PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1
/// `RSA PRIVATE KEY` block. Encrypted keys are not supported.
pub fn private_key_der(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        what: "private key",
        detail: e.to_string(),
    })
}

/// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER of the public half of `key_pem`,
/// comparable with `CertInfo::spki_sha256`.
///
/// Supports ECDSA P-256/P-384 (PKCS#8 or SEC1), Ed25519 (PKCS#8) and RSA 2048..=8192 bits
/// (PKCS#8 or PKCS#1). Limits, from ring: no RSA below 2048 bits, no P-521, no encrypted keys.
pub fn key_spki_sha256(key_pem: &str) -> Result<String, PkiError> {
    let key = load_key_pair(key_pem)?;
    Ok(sha256_hex(&key.subject_public_key_info()))
}

/// True when `cert_der` was issued by `ca_der`: see [`issued_by`], which says why not.
pub fn verify_issued_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    issued_by(cert_der, ca_der).is_ok()
}

/// Which end of a TLS connection a certificate authenticates; checked against its extended key
/// usage when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A TLS server (an agent on 7443, the pairing listener, the API).
    Server,
    /// A TLS client (the dispatcher calling an agent).
    Client,
}

/// Why [`verify_leaf`] or [`issued_by`] refused a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafRefusal {
    /// The certificate (or the CA certificate) does not parse.
    Unparsable,
    /// The CA certificate is not a CA: no basicConstraints CA:TRUE (and not X.509 v1), or a
    /// keyUsage without keyCertSign.
    IssuerNotCa,
    /// The issuer name is not the CA's subject.
    UnknownIssuer,
    /// The signature does not verify with the CA's key, or uses an algorithm refused here
    /// (MD5, SHA-1, RSA below 2048 bits).
    BadSignature,
    /// `now` is past notAfter.
    Expired,
    /// `now` is before notBefore.
    NotYetValid,
    /// The certificate is itself a CA (basicConstraints CA:TRUE).
    CaAsLeaf,
    /// It has an extended key usage without the one this purpose needs.
    WrongPurpose,
    /// It has a critical extension this code does not understand.
    UnknownCriticalExtension(String),
}

impl fmt::Display for LeafRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparsable => write!(f, "certificate does not parse"),
            Self::IssuerNotCa => write!(f, "the issuing certificate is not a CA"),
            Self::UnknownIssuer => write!(f, "not issued by the configured CA"),
            Self::BadSignature => write!(f, "signature does not verify with the CA key"),
            Self::Expired => write!(f, "certificate expired"),
            Self::NotYetValid => write!(f, "certificate not valid yet"),
            Self::CaAsLeaf => write!(f, "a CA certificate cannot identify a peer"),
            Self::WrongPurpose => write!(f, "extended key usage does not allow this use"),
            Self::UnknownCriticalExtension(oid) => write!(f, "unknown critical extension {oid}"),
        }
    }
}

impl std::error::Error for LeafRefusal {}

/// Checks that `ca_der` issued `cert_der`: the CA certificate is a CA (basicConstraints
/// CA:TRUE, or X.509 v1 as Perl-era CAs may be; a keyUsage, when present, includes
/// keyCertSign), the certificate's issuer equals the CA's subject, and its signature verifies
/// with the CA's public key under one of the algorithms of the TLS crypto provider (ECDSA
/// P-256/P-384, Ed25519, RSA PKCS#1/PSS 2048-8192 bits with SHA-256/384/512: no MD5, no SHA-1).
/// No validity-time check; see [`verify_leaf`].
pub fn issued_by(cert_der: &[u8], ca_der: &[u8]) -> Result<(), LeafRefusal> {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(cert_der),
        X509Certificate::from_der(ca_der),
    ) else {
        return Err(LeafRefusal::Unparsable);
    };
    check_issued_by(&cert, cert_der, &ca)
}

/// Verifies a peer's end-entity certificate against one CA, the way every TLS verifier here
/// does (reference protocol.md 6.2: Perl-era leaves are X.509 v1 with no extensions, which
/// webpki refuses, so this is done here instead):
///
/// - issued by `ca_der` ([`issued_by`]: CA constraints, issuer name, signature);
/// - `now` (unix seconds) within notBefore..=notAfter;
/// - not itself a CA;
/// - an extended key usage, when present, allows `purpose` (or anyExtendedKeyUsage);
/// - no critical extension this code does not understand.
///
/// X.509 v1 and certificates without SAN, keyUsage or EKU pass: identity is decided after
/// the handshake by serial or pinned key, never by name. Returns the certificate's facts.
pub fn verify_leaf(
    cert_der: &[u8],
    ca_der: &[u8],
    now: i64,
    purpose: Purpose,
) -> Result<CertInfo, LeafRefusal> {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(cert_der),
        X509Certificate::from_der(ca_der),
    ) else {
        return Err(LeafRefusal::Unparsable);
    };
    check_issued_by(&cert, cert_der, &ca)?;
    let info = cert_info_der(cert_der).map_err(|_| LeafRefusal::Unparsable)?;
    if now > info.not_after {
        return Err(LeafRefusal::Expired);
    }
    if now < info.not_before {
        return Err(LeafRefusal::NotYetValid);
    }
    if info.is_ca {
        return Err(LeafRefusal::CaAsLeaf);
    }
    match cert.extended_key_usage() {
        Ok(None) => {}
        Ok(Some(eku)) => {
            let e = eku.value;
            let allowed = e.any
                || match purpose {
                    Purpose::Server => e.server_auth,
                    Purpose::Client => e.client_auth,
                };
            if !allowed {
                return Err(LeafRefusal::WrongPurpose);
            }
        }
        // A duplicated or malformed extension is not something to guess about.
        Err(_) => return Err(LeafRefusal::Unparsable),
    }
    for ext in cert.extensions() {
        let unknown = matches!(
            ext.parsed_extension(),
            ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
        );
        if ext.critical && unknown {
            return Err(LeafRefusal::UnknownCriticalExtension(
                ext.oid.to_id_string(),
            ));
        }
    }
    Ok(info)
}

/// Verifies `signature` over `message` with the public key in SubjectPublicKeyInfo DER
/// `spki_der`, under the first of `algs` made for that key's algorithm that accepts it.
/// Used for TLS handshake signatures, where the peer certificate may be X.509 v1.
pub fn verify_with_spki(
    algs: &[&'static dyn SignatureVerificationAlgorithm],
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Some((key_alg, key)) = split_spki(spki_der) else {
        return false;
    };
    algs.iter()
        .filter(|a| a.public_key_alg_id().as_ref() == key_alg)
        .any(|a| a.verify_signature(key, message, signature).is_ok())
}

/// The SubjectPublicKeyInfo DER of a certificate (any version).
pub fn cert_spki(cert_der: &[u8]) -> Option<Vec<u8>> {
    X509Certificate::from_der(cert_der)
        .ok()
        .map(|(_, c)| c.public_key().raw.to_vec())
}

/// True when `now` (unix seconds) lies within `[not_before, not_after]`.
pub fn time_valid(info: &CertInfo, now: i64) -> bool {
    info.not_before <= now && now <= info.not_after
}

/// The 6-digit pairing code of a CSR (protocol.md 5.3): the first four bytes of SHA-256 of the
/// exact PEM bytes, big-endian, modulo 1 000 000, zero-padded. `b"abc"` gives `432319`.
pub fn pairing_code(csr_pem: &[u8]) -> String {
    let d = digest(&SHA256, csr_pem);
    let b = d.as_ref(); // 32 bytes: SHA-256 output length, so [0..4] is in bounds.
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    format!("{:06}", n % 1_000_000)
}

/// Parses a serial written by an operator or a file into minimal lowercase hex.
///
/// Trims; strips a leading `serial=` then `0x` (case-insensitive); accepts colon form
/// (`AA:BB:CC`, each group 1+ hex digits) or 1+ hex digits. All-digit input is HEX (`10` is
/// 0x10), deliberately unlike the Perl `serial_to_hex` (protocol.md 2.4). Leading zeros are
/// stripped keeping one digit. Anything else (empty, `zzz`, inner spaces) is `None`.
pub fn canonical_serial(text: &str) -> Option<String> {
    let mut s = text.trim();
    s = strip_prefix_ci(s, "serial=").unwrap_or(s);
    s = strip_prefix_ci(s, "0x").unwrap_or(s);
    let digits: String = if s.contains(':') {
        if !s
            .split(':')
            .all(|g| !g.is_empty() && g.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return None;
        }
        s.chars().filter(|&c| c != ':').collect()
    } else {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        s.to_string()
    };
    Some(minimal_hex(&digits.to_ascii_lowercase()))
}

/// The Perl original's `serial_to_hex` (protocol.md 2.4), reproduced only to recognise serial
/// strings a Perl peer sent or wrote; never use it to decide trust.
///
/// Strips `serial=` and `0x` (case-insensitive); colon form loses its colons and leading zeros;
/// an all-digit string is read as DECIMAL and converted to hex (the original's collision: `10`
/// and `0a` both give `a`); other hex loses its leading zeros. Anything else, or input longer
/// than [`MAX_PERL_SERIAL_CHARS`], is `None` (the original produced `nan`).
pub fn perl_serial(text: &str) -> Option<String> {
    let mut s = text.trim();
    if s.len() > MAX_PERL_SERIAL_CHARS {
        return None;
    }
    s = strip_prefix_ci(s, "serial=").unwrap_or(s);
    s = strip_prefix_ci(s, "0x").unwrap_or(s);
    if s.contains(':') {
        let h: String = s.chars().filter(|&c| c != ':').collect();
        return (!h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| minimal_hex(&h.to_ascii_lowercase()));
    }
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|c| c.is_ascii_digit()) {
        return Some(decimal_to_hex(s));
    }
    s.bytes()
        .all(|c| c.is_ascii_hexdigit())
        .then(|| minimal_hex(&s.to_ascii_lowercase()))
}

/// Longest serial text [`perl_serial`] reads: a 20-byte serial (the X.509 maximum) is 49
/// decimal digits, so this leaves room for prefixes and colons and bounds the arithmetic.
pub const MAX_PERL_SERIAL_CHARS: usize = 128;

/// An ASCII decimal digit string as minimal lowercase hex (schoolbook base conversion).
fn decimal_to_hex(digits: &str) -> String {
    // Little-endian base-16 digits of the value read so far.
    let mut acc: Vec<u8> = Vec::new();
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for x in acc.iter_mut() {
            let v = u32::from(*x) * 10 + carry;
            *x = (v % 16) as u8;
            carry = v / 16;
        }
        while carry > 0 {
            acc.push((carry % 16) as u8);
            carry /= 16;
        }
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let s: String = acc
        .iter()
        .rev()
        .map(|&x| DIGITS[usize::from(x)] as char)
        .collect();
    minimal_hex(&s)
}

/// Big-endian serial bytes (as in the certificate) to minimal lowercase hex (`"0"` for zero
/// or empty), the same form `canonical_serial` produces.
pub fn serial_hex(bytes: &[u8]) -> String {
    minimal_hex(&hex(bytes))
}

/// Normalises a SHA-256 fingerprint to 64 lowercase hex characters.
///
/// Accepts `sha256:HEX`, OpenSSL's `SHA256 Fingerprint=HEX` or bare `HEX`, any case, with or
/// without `:` between bytes; anything else (wrong length, non-hex) is `None`.
pub fn normalise_fingerprint(text: &str) -> Option<String> {
    let mut s = text.trim();
    for prefix in ["sha256 fingerprint=", "sha256:"] {
        if let Some(rest) = strip_prefix_ci(s, prefix) {
            s = rest;
            break;
        }
    }
    let h: String = s.chars().filter(|&c| c != ':').collect();
    if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(h.to_ascii_lowercase())
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest(&SHA256, bytes).as_ref())
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The issuer checks of [`issued_by`] on parsed certificates.
fn check_issued_by(
    cert: &X509Certificate<'_>,
    cert_der: &[u8],
    ca: &X509Certificate<'_>,
) -> Result<(), LeafRefusal> {
    if !(ca.is_ca() || ca.version() == X509Version::V1) {
        return Err(LeafRefusal::IssuerNotCa);
    }
    match ca.key_usage() {
        Ok(None) => {}
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        _ => return Err(LeafRefusal::IssuerNotCa),
    }
    if !same_name(cert.issuer(), ca.subject()) {
        return Err(LeafRefusal::UnknownIssuer);
    }
    let Some((tbs, sig_alg, signature)) = split_signed(cert_der) else {
        return Err(LeafRefusal::Unparsable);
    };
    let Some((key_alg, key)) = split_spki(ca.public_key().raw) else {
        return Err(LeafRefusal::Unparsable);
    };
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let verified = algs
        .iter()
        .filter(|a| {
            a.signature_alg_id().as_ref() == sig_alg && a.public_key_alg_id().as_ref() == key_alg
        })
        .any(|a| a.verify_signature(key, tbs, signature).is_ok());
    if verified {
        Ok(())
    } else {
        Err(LeafRefusal::BadSignature)
    }
}

/// A certificate's three parts: the whole tbsCertificate element (the signed bytes), the
/// signature AlgorithmIdentifier's contents and the signature bits.
fn split_signed(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let body = der_element(der, 0x30).filter(|e| e.rest.is_empty())?;
    let tbs = der_element(body.contents, 0x30)?;
    let alg = der_element(tbs.rest, 0x30)?;
    let bits = der_element(alg.rest, 0x03).filter(|e| e.rest.is_empty())?;
    Some((tbs.whole, alg.contents, bit_string_bytes(bits.contents)?))
}

/// A SubjectPublicKeyInfo's AlgorithmIdentifier contents and key bits.
fn split_spki(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = der_element(der, 0x30).filter(|e| e.rest.is_empty())?;
    let alg = der_element(body.contents, 0x30)?;
    let bits = der_element(alg.rest, 0x03).filter(|e| e.rest.is_empty())?;
    Some((alg.contents, bit_string_bytes(bits.contents)?))
}

/// The bytes of a BIT STRING's contents with no unused bits (keys and signatures are whole
/// bytes).
fn bit_string_bytes(contents: &[u8]) -> Option<&[u8]> {
    match contents.split_first() {
        Some((0, bytes)) => Some(bytes),
        _ => None,
    }
}

/// One DER element and what follows it.
struct DerElement<'a> {
    /// Tag, length and contents.
    whole: &'a [u8],
    /// The contents.
    contents: &'a [u8],
    /// The bytes after the element.
    rest: &'a [u8],
}

/// The first DER element of `input` if its tag is `tag` (a single-byte tag). Definite lengths
/// of at most four bytes, which is all a certificate up to 4 GiB uses; anything else is `None`.
fn der_element(input: &[u8], tag: u8) -> Option<DerElement<'_>> {
    let (&got, rest) = input.split_first()?;
    if got != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some(DerElement {
        whole: &input[..header + len],
        contents: &rest[..len],
        rest: &rest[len..],
    })
}

/// Key type and size policy for a CSR public key.
fn check_csr_key(spki: &X509Spki<'_>) -> Result<(), PkiError> {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        OID_RSA_ENCRYPTION => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => bit_length(rsa.modulus),
                _ => {
                    return Err(PkiError::Parse {
                        what: "csr rsa public key",
                        detail: "malformed RSAPublicKey".to_string(),
                    })
                }
            };
            if bits < MIN_RSA_BITS {
                return Err(PkiError::CsrKeyTooSmall {
                    kind: "RSA",
                    bits,
                    min: MIN_RSA_BITS,
                });
            }
            Ok(())
        }
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_CURVE_P256 | OID_CURVE_P384 => Ok(()),
                "" => Err(PkiError::CsrUnsupportedKey(
                    "EC key without a named curve".to_string(),
                )),
                other => Err(PkiError::CsrUnsupportedKey(format!("EC curve {other}"))),
            }
        }
        OID_ED25519 => Ok(()),
        other => Err(PkiError::CsrUnsupportedKey(format!(
            "key algorithm {other}"
        ))),
    }
}

/// The single non-empty common name of a CSR subject.
fn single_common_name(subject: &X509Name<'_>) -> Result<String, PkiError> {
    let cns: Vec<_> = subject.iter_common_name().collect();
    match cns.as_slice() {
        [] => Err(PkiError::CsrNoCommonName),
        [one] => match one.as_str() {
            Ok(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(PkiError::CsrBadCommonName),
        },
        many => Err(PkiError::CsrManyCommonNames(many.len())),
    }
}

/// Leaf certificate parameters, decided entirely by the CA.
fn leaf_params(cn: &str, is_rsa: bool, days: u32) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(cn);
    if let Ok(ip) = cn.parse::<std::net::IpAddr>() {
        params.subject_alt_names = vec![SanType::IpAddress(ip)];
    } else if is_dns_name(cn) {
        // is_dns_name admits only ASCII, so the IA5 conversion cannot fail; map it anyway.
        let name = cn.try_into().map_err(|e: rcgen::Error| PkiError::Sign {
            what: "certificate",
            detail: format!("subject alternative name '{cn}': {e}"),
        })?;
        params.subject_alt_names = vec![SanType::DnsName(name)];
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if is_rsa {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_serial_and_validity(&mut params, days)?;
    Ok(params)
}

/// Random positive 128-bit serial; validity from now - 5 min to now + `days`.
fn set_serial_and_validity(params: &mut CertificateParams, days: u32) -> Result<(), PkiError> {
    let mut serial = [0u8; SERIAL_BYTES];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Random)?;
    // Top bit clear keeps the DER INTEGER positive; a non-zero first byte keeps it 16 bytes
    // long, so the encoding is minimal and the serial never collapses to a short value.
    serial[0] = (serial[0] & 0x7f).max(1);
    // A serial whose hex is all digits is read as decimal by Perl agents, which then fail to
    // match it (protocol.md 2.4). About one draw in two million is; setting bits 3 and 1 of
    // the last digit makes it a, b, e or f.
    if hex(&serial).bytes().all(|c| c.is_ascii_digit()) {
        serial[SERIAL_BYTES - 1] |= 0x0a;
    }
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let now = crate::time::now();
    // rcgen's validity fields are `time::OffsetDateTime`; `time` is not a direct dependency,
    // so start from rcgen's epoch constructor and add a std Duration. Pre-1970 clamps to 1970.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since_epoch = |secs: i64| Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    params.not_before = epoch + since_epoch(now - BACKDATE_SECS);
    params.not_after = epoch + since_epoch(now + i64::from(days) * SECS_PER_DAY);
    Ok(())
}

/// CA certificate + key into an rcgen issuer, refusing a non-CA certificate or a key that is
/// not the certificate's.
fn load_issuer(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let ca_der = first_cert(ca_cert_pem, "ca certificate")?;
    let (_, ca) = X509Certificate::from_der(&ca_der).map_err(|e| PkiError::Parse {
        what: "ca certificate",
        detail: e.to_string(),
    })?;
    if !(ca.is_ca() || ca.version() == X509Version::V1) {
        return Err(PkiError::NotCa);
    }
    let key = load_key_pair(ca_key_pem)?;
    if key.subject_public_key_info() != ca.public_key().raw {
        return Err(PkiError::CaKeyMismatch);
    }
    Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.as_slice()), key).map_err(|e| {
        PkiError::Parse {
            what: "ca certificate",
            detail: e.to_string(),
        }
    })
}

/// Loads any supported private key PEM into an rcgen key pair.
///
/// rcgen on ring only reads PKCS#8, so PKCS#1 (RSA) and SEC1 (EC) keys are wrapped into
/// PKCS#8 first; for SEC1 the curve is not known up front, so P-256 then P-384 is tried (ring
/// refuses a wrapper whose curve disagrees with the key's own parameters).
fn load_key_pair(pem: &str) -> Result<KeyPair, PkiError> {
    let key = private_key_der(pem)?;
    let candidates: Vec<Vec<u8>> = match &key {
        PrivateKeyDer::Pkcs8(k) => vec![k.secret_pkcs8_der().to_vec()],
        PrivateKeyDer::Pkcs1(k) => vec![wrap_pkcs8(ALG_ID_RSA, k.secret_pkcs1_der())],
        PrivateKeyDer::Sec1(k) => vec![
            wrap_pkcs8(ALG_ID_EC_P256, k.secret_sec1_der()),
            wrap_pkcs8(ALG_ID_EC_P384, k.secret_sec1_der()),
        ],
        _ => return Err(PkiError::UnsupportedKey("unknown key format".to_string())),
    };
    let mut last = String::new();
    for der in candidates {
        match KeyPair::try_from(&PrivatePkcs8KeyDer::from(der)) {
            Ok(k) => return Ok(k),
            Err(e) => last = e.to_string(),
        }
    }
    Err(PkiError::UnsupportedKey(format!(
        "{last} (supported: EC P-256/P-384, Ed25519, RSA 2048-8192 bits)"
    )))
}

/// PKCS#8 PrivateKeyInfo v0 around a PKCS#1 or SEC1 private key.
fn wrap_pkcs8(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(alg_id);
    body.extend(der_tlv(0x04, key));
    der_tlv(0x30, &body)
}

/// One DER tag-length-value with a definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// DER of the first `CERTIFICATE` block, or a `Pem` error naming `what`.
fn first_cert(pem: &str, what: &'static str) -> Result<Vec<u8>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| PkiError::Pem {
            what,
            detail: e.to_string(),
        })
}

/// Name equality for issuer/subject matching: identical DER, or the same attributes in the
/// same order with equal string values (tolerates a PrintableString/UTF8String difference).
fn same_name(a: &X509Name<'_>, b: &X509Name<'_>) -> bool {
    if a.as_raw() == b.as_raw() {
        return true;
    }
    let flat = |n: &X509Name<'_>| -> Option<Vec<(String, String)>> {
        n.iter_attributes()
            .map(|at| Some((at.attr_type().to_id_string(), at.as_str().ok()?.to_string())))
            .collect()
    };
    matches!((flat(a), flat(b)), (Some(x), Some(y)) if x == y)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A hostname in LDH form: dot-separated labels of 1..=63 letters, digits and hyphens, not
/// starting or ending with a hyphen, 253 characters at most.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn bit_length(be: &[u8]) -> usize {
    let trimmed: &[u8] = match be.iter().position(|&b| b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Strips leading zeros from a hex string, keeping at least one character.
fn minimal_hex(h: &str) -> String {
    let t = h.trim_start_matches('0');
    if t.is_empty() {
        "0".to_string()
    } else {
        t.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_turns_due_at_half_and_expired_at_not_after() {
        let info = |not_before, not_after| CertInfo {
            serial: "1".into(),
            cn: "a".into(),
            not_before,
            not_after,
            spki_sha256: String::new(),
            fingerprint: String::new(),
            is_ca: false,
        };
        let day = 86_400;
        let c = info(0, 10 * day);
        assert_eq!(c.lifetime(-1), Lifetime::NotYetValid);
        assert_eq!(c.lifetime(day), Lifetime::Fresh { days_left: 9 });
        assert_eq!(c.lifetime(5 * day), Lifetime::Fresh { days_left: 5 });
        assert_eq!(
            c.lifetime(5 * day + 1),
            Lifetime::RenewalDue { days_left: 4 }
        );
        assert_eq!(
            c.lifetime(10 * day - 1),
            Lifetime::RenewalDue { days_left: 0 }
        );
        assert_eq!(c.lifetime(10 * day), Lifetime::Expired);
    }

    const DAY: i64 = 86_400;

    #[test]
    fn pairing_code_matches_protocol_vector() {
        assert_eq!(pairing_code(b"abc"), "432319");
        assert_eq!(pairing_code(b"").len(), 6);
    }

    #[test]
    fn canonical_serial_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("0x0A", Some("a")),
            ("0X0a", Some("a")),
            ("serial=10", Some("10")),
            ("SERIAL=0x0f", Some("f")),
            ("10", Some("10")),
            ("AA:BB", Some("aabb")),
            ("00:01:ff", Some("1ff")),
            ("00ff", Some("ff")),
            ("0", Some("0")),
            ("000", Some("0")),
            ("  7F\n", Some("7f")),
            ("zzz", None),
            ("", None),
            ("   ", None),
            ("0x", None),
            ("serial=", None),
            ("1 2", None),
            ("AA::BB", None),
            (":AA", None),
            ("-1", None),
            ("0xg1", None),
        ];
        for &(input, want) in cases {
            assert_eq!(canonical_serial(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn perl_serial_reproduces_the_original_table() {
        // protocol.md 2.4: true serial, hex as openssl prints it, the original's result.
        let cases: &[(&str, Option<&str>)] = &[
            ("02", Some("2")),
            ("0A", Some("a")),
            ("10", Some("a")),
            ("14", Some("e")),
            ("20", Some("14")),
            ("0100", Some("64")),
            ("serial=10", Some("a")),
            ("0x10", Some("a")),
            ("00:10", Some("10")),
            ("1F", Some("1f")),
            ("", None),
            ("zz", None),
            (
                "12345678901234567890123456789012345678901234567890",
                Some("8727f6369aaf83ca15026747af8c7f196ce3f0ad2"),
            ),
        ];
        for &(input, want) in cases {
            assert_eq!(perl_serial(input).as_deref(), want, "{input:?}");
        }
        assert_eq!(perl_serial(&"1".repeat(MAX_PERL_SERIAL_CHARS + 1)), None);
    }

    #[test]
    fn serial_hex_is_minimal() {
        assert_eq!(serial_hex(&[]), "0");
        assert_eq!(serial_hex(&[0]), "0");
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x10]), "10");
        assert_eq!(serial_hex(&[0x01, 0x00]), "100");
    }

    #[test]
    fn normalise_fingerprint_table() {
        let hex64 = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        let cases: Vec<(String, Option<&str>)> = vec![
            (format!("sha256:{hex64}"), Some(&hex64)),
            (format!("SHA256:{}", hex64.to_uppercase()), Some(&hex64)),
            (hex64.clone(), Some(&hex64)),
            (colons.clone(), Some(&hex64)),
            (format!("sha256 Fingerprint={colons}"), Some(&hex64)),
            (format!(" {hex64} "), Some(&hex64)),
            (hex64[..62].to_string(), None),
            (format!("{hex64}00"), None),
            (format!("sha1:{hex64}"), None),
            ("zz".repeat(32), None),
            (String::new(), None),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_fingerprint(&input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn sha256_and_random_hex_shapes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let a = random_hex(8);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(random_hex(16), random_hex(16));
    }

    #[test]
    fn create_ca_is_a_constrained_ca() {
        let (cert, key) = create_ca(3650).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let info = cert_info_pem(&cert).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.cn, "ctrl-exec CA");
        assert!(
            info.serial.len() >= 31 && info.serial.len() <= 32,
            "{}",
            info.serial
        );
        assert_eq!(info.spki_sha256, key_spki_sha256(&key).unwrap());
        assert!(info.fingerprint.starts_with("sha256:") && info.fingerprint.len() == 71);
        assert_near(info.not_after, crate::time::now() + 3650 * DAY);
        assert_near(info.not_before, crate::time::now() - 300);

        let der = &pem_certs(&cert)[0];
        let (_, x) = X509Certificate::from_der(der).unwrap();
        let bc = x.basic_constraints().unwrap().unwrap();
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
        assert!(verify_issued_by(der, der), "self-signed CA verifies itself");
    }

    #[test]
    fn issued_dispatcher_cert_verifies_only_against_its_ca() {
        let (ca, ca_key) = create_ca(30).unwrap();
        let (other_ca, other_key) = create_ca(30).unwrap();
        let (cert, key) = issue_key_and_cert(&ca, &ca_key, "ctrl-exec-dispatcher", 825).unwrap();
        let info = cert_info_pem(&cert).unwrap();
        assert_eq!(info.cn, "ctrl-exec-dispatcher");
        assert!(!info.is_ca);
        assert_eq!(info.spki_sha256, key_spki_sha256(&key).unwrap());
        assert_near(info.not_after, crate::time::now() + 825 * DAY);
        assert!(time_valid(&info, crate::time::now()));
        assert!(!time_valid(&info, info.not_after + 1));
        assert!(!time_valid(&info, info.not_before - 1));

        let cert_der = &pem_certs(&cert)[0];
        assert!(verify_issued_by(cert_der, &pem_certs(&ca)[0]));
        assert!(!verify_issued_by(cert_der, &pem_certs(&other_ca)[0]));
        // A leaf is not a CA, so it issues nothing, not even its own self-check.
        assert!(!verify_issued_by(cert_der, cert_der));
        assert!(!verify_issued_by(b"garbage", &pem_certs(&ca)[0]));

        // The CA key must belong to the CA certificate.
        assert_eq!(
            issue_key_and_cert(&ca, &other_key, "x", 1).unwrap_err(),
            PkiError::CaKeyMismatch
        );
        // A leaf cannot act as CA.
        assert_eq!(
            issue_key_and_cert(&cert, &key, "x", 1).unwrap_err(),
            PkiError::NotCa
        );
    }

    #[test]
    fn sign_csr_takes_key_and_cn_and_decides_the_rest() {
        let (ca, ca_key) = create_ca(30).unwrap();
        let key = generate_key_pem().unwrap();
        let csr_pem = make_csr(&key, "web-01.example.com").unwrap();
        let csr = check_csr(&csr_pem, Some("web-01.example.com")).unwrap();
        assert_eq!(csr.cn, "web-01.example.com");
        let cert = sign_csr(&ca, &ca_key, &csr, 365).unwrap();
        let info = cert_info_pem(&cert).unwrap();
        assert_eq!(info.cn, "web-01.example.com");
        assert_eq!(info.spki_sha256, key_spki_sha256(&key).unwrap());
        assert_eq!(info.spki_sha256, sha256_hex(&csr.public_key_der));
        assert!(!info.is_ca);
        assert_near(info.not_after, crate::time::now() + 365 * DAY);
        assert_near(info.not_before, crate::time::now() - 300);
        let der = &pem_certs(&cert)[0];
        assert!(verify_issued_by(der, &pem_certs(&ca)[0]));

        let (_, x) = X509Certificate::from_der(der).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            format!("{:?}", san.general_names),
            "[DNSName(\"web-01.example.com\")]"
        );
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign());
        let bc = x.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);

        // Two certificates never share a serial.
        let again = cert_info_pem(&sign_csr(&ca, &ca_key, &csr, 365).unwrap()).unwrap();
        assert_ne!(again.serial, info.serial);
    }

    #[test]
    fn sign_csr_omits_san_for_non_dns_cn() {
        let (ca, ca_key) = create_ca(30).unwrap();
        let key = generate_key_pem().unwrap();
        let csr = check_csr(&make_csr(&key, "not a host name").unwrap(), None).unwrap();
        let cert = sign_csr(&ca, &ca_key, &csr, 1).unwrap();
        let der = &pem_certs(&cert)[0];
        let (_, x) = X509Certificate::from_der(der).unwrap();
        assert!(x.subject_alternative_name().unwrap().is_none());
        assert_eq!(cert_info_der(der).unwrap().cn, "not a host name");
    }

    #[test]
    fn sign_csr_rechecks_a_hand_built_csr() {
        let (ca, ca_key) = create_ca(30).unwrap();
        let key = generate_key_pem().unwrap();
        let mut csr = check_csr(&make_csr(&key, "a.example").unwrap(), None).unwrap();
        csr.cn = "b.example".to_string();
        assert!(matches!(
            sign_csr(&ca, &ca_key, &csr, 1),
            Err(PkiError::CsrCommonNameMismatch { .. })
        ));
    }

    #[test]
    fn check_csr_refusals() {
        let key = generate_key_pem().unwrap();
        let good = make_csr(&key, "host-a").unwrap();
        assert!(check_csr(&good, None).is_ok());

        let err = check_csr(&good, Some("host-b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "csr common name 'host-a' does not match 'host-b'"
        );

        let too_long = format!("{good}{}", " ".repeat(MAX_CSR_PEM_BYTES));
        assert!(matches!(
            check_csr(&too_long, None),
            Err(PkiError::CsrTooLong {
                max: MAX_CSR_PEM_BYTES,
                ..
            })
        ));
        // Exactly at the limit is accepted (trailing whitespace is outside the PEM block).
        let at_limit = format!("{good}{}", "\n".repeat(MAX_CSR_PEM_BYTES - good.len()));
        assert!(check_csr(&at_limit, None).is_ok());

        let (ca, _) = create_ca(1).unwrap();
        assert_eq!(check_csr(&ca, None).unwrap_err(), PkiError::CsrNotPem);
        assert_eq!(check_csr("garbage", None).unwrap_err(), PkiError::CsrNotPem);
        let bad_body = format!("{CSR_PEM_HEADER}\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
        assert!(matches!(
            check_csr(&bad_body, None),
            Err(PkiError::Parse { what: "csr", .. })
        ));
        let no_end = format!("{CSR_PEM_HEADER}\nAAAA\n");
        assert!(check_csr(&no_end, None).is_err());

        // Flip one byte of the signature: the self-signature no longer verifies.
        let mut der = CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        assert_eq!(
            check_csr(&tampered, None).unwrap_err(),
            PkiError::CsrBadSignature
        );

        let empty_cn = make_csr(&key, "").unwrap();
        assert!(check_csr(&empty_cn, None).is_err());
    }

    #[test]
    fn private_key_formats() {
        let key = generate_key_pem().unwrap();
        assert!(matches!(private_key_der(&key), Ok(PrivateKeyDer::Pkcs8(_))));
        assert!(matches!(
            private_key_der("nope"),
            Err(PkiError::Pem {
                what: "private key",
                ..
            })
        ));
        assert!(key_spki_sha256("nope").is_err());
    }

    #[test]
    fn der_tlv_long_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der_tlv(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn dns_name_rules() {
        for ok in ["a", "web-01.example.com", "x1.y2", "A.B"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a b", "a_b", ".a", "é.example"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(!is_dns_name(&"a".repeat(64)));
    }

    // --- interoperability with openssl (skipped when openssl is not installed) ---------------

    #[test]
    fn openssl_rsa_csrs_policy() {
        let Some(dir) = Fixture::new("rsa_csrs") else {
            return;
        };
        let (ca, ca_key) = create_ca(30).unwrap();

        let csr2048 = dir.req_rsa("r2048", 2048, &[]);
        let csr = check_csr(&csr2048, Some("web-01.example.com")).unwrap();
        let cert = sign_csr(&ca, &ca_key, &csr, 365).unwrap();
        let info = cert_info_pem(&cert).unwrap();
        assert_eq!(
            info.spki_sha256,
            key_spki_sha256(&dir.read("r2048.key")).unwrap()
        );
        let der = &pem_certs(&cert)[0];
        let (_, x) = X509Certificate::from_der(der).unwrap();
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        // OpenSSL accepts what the Rust CA signs.
        dir.write("ca.crt", &ca);
        dir.write("leaf.crt", &cert);
        dir.openssl(&[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslclient",
            "leaf.crt",
        ]);
        dir.openssl(&[
            "verify",
            "-CAfile",
            "ca.crt",
            "-purpose",
            "sslserver",
            "leaf.crt",
        ]);

        let csr1024 = dir.req_rsa("r1024", 1024, &[]);
        let err = check_csr(&csr1024, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "csr key too small: RSA 1024 bits (minimum 2048)"
        );

        let csr_sha1 = dir.req_rsa("rsha1", 2048, &["-sha1"]);
        assert!(matches!(
            check_csr(&csr_sha1, None),
            Err(PkiError::CsrWeakSignature(_))
        ));

        // A CSR asking for CA:TRUE and extra extensions gets a plain leaf anyway.
        let csr_ca = dir.req_rsa(
            "rca",
            2048,
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "subjectAltName=DNS:evil.example",
                "-addext",
                "nsComment=hello",
            ],
        );
        let csr = check_csr(&csr_ca, None).unwrap();
        let cert = sign_csr(&ca, &ca_key, &csr, 1).unwrap();
        let der = &pem_certs(&cert)[0];
        let (_, x) = X509Certificate::from_der(der).unwrap();
        assert!(!x.is_ca());
        let san = x.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            format!("{:?}", san.general_names),
            "[DNSName(\"web-01.example.com\")]"
        );
    }

    #[test]
    fn key_type_words() {
        assert_eq!(KeyType::parse("ec"), Some(KeyType::EcP256));
        assert_eq!(KeyType::parse("RSA"), Some(KeyType::Rsa(2048)));
        assert_eq!(KeyType::parse("rsa4096"), Some(KeyType::Rsa(4096)));
        assert_eq!(KeyType::parse("rsa1024"), None);
        assert_eq!(KeyType::parse("dsa"), None);
        for k in [KeyType::EcP256, KeyType::Rsa(2048), KeyType::Rsa(3072)] {
            assert_eq!(KeyType::parse(&k.to_string()), Some(k));
        }
        assert!(generate_key_pem_of(KeyType::Rsa(1024)).is_err());
        assert!(generate_key_pem_of(KeyType::Rsa(8192)).is_err());
    }

    #[test]
    fn rsa_agent_csr_passes_the_perl_signers_checks() {
        let key = generate_key_pem_of(KeyType::Rsa(2048)).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let csr = make_csr(&key, "web-01.example.com").unwrap();
        let checked = check_csr(&csr, Some("web-01.example.com")).unwrap();
        assert_eq!(
            sha256_hex(&checked.public_key_der),
            key_spki_sha256(&key).unwrap()
        );
        let Some(dir) = Fixture::new("rsa_agent_csr") else {
            return;
        };
        // The original's sign_csr (protocol.md 6.2): at most 10 240 bytes, the PEM header,
        // `openssl req -verify`, `Public-Key: (N bit)` with N >= 2048, no MD/SHA-1 signature.
        assert!(csr.len() <= 10_240 && csr.starts_with(CSR_PEM_HEADER));
        dir.write("agent.csr", &csr);
        dir.openssl(&["req", "-in", "agent.csr", "-noout", "-verify"]);
        let text = dir.openssl(&["req", "-in", "agent.csr", "-noout", "-text"]);
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
        assert!(text.contains("Subject: CN = web-01.example.com"), "{text}");
        // And openssl reads the key itself.
        dir.write("agent.key", &key);
        dir.openssl(&["rsa", "-in", "agent.key", "-check", "-noout"]);
    }

    #[test]
    fn openssl_key_formats_give_matching_spki() {
        let Some(dir) = Fixture::new("key_formats") else {
            return;
        };
        // PKCS#1 RSA ("RSA PRIVATE KEY"), as Perl-era tools wrote.
        dir.openssl(&["genrsa", "-traditional", "-out", "rsa1.key", "2048"]);
        assert!(dir
            .read("rsa1.key")
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(matches!(
            private_key_der(&dir.read("rsa1.key")),
            Ok(PrivateKeyDer::Pkcs1(_))
        ));
        // SEC1 EC keys on both supported curves.
        dir.openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "p256.key",
        ]);
        dir.openssl(&[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "p384.key",
        ]);
        assert!(dir
            .read("p256.key")
            .starts_with("-----BEGIN EC PRIVATE KEY-----"));
        dir.openssl(&["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
        for name in ["rsa1.key", "p256.key", "p384.key", "ed.key"] {
            let pub_der = format!("{name}.pub.der");
            dir.openssl(&[
                "pkey", "-in", name, "-pubout", "-outform", "DER", "-out", &pub_der,
            ]);
            let want = sha256_hex(&std::fs::read(dir.path(&pub_der)).unwrap());
            assert_eq!(key_spki_sha256(&dir.read(name)).unwrap(), want, "{name}");
            // make_csr works with every such key and the CSR passes policy.
            let csr = make_csr(&dir.read(name), "k.example").unwrap();
            let checked = check_csr(&csr, Some("k.example")).unwrap();
            assert_eq!(sha256_hex(&checked.public_key_der), want, "{name}");
        }
    }

    #[test]
    fn openssl_perl_era_ca_and_v1_certificates() {
        let Some(dir) = Fixture::new("perl_era") else {
            return;
        };
        // The Perl CA: RSA key, `req -x509` (v3, CA:TRUE), then `x509 -req` (v1 with 3.0).
        dir.openssl(&["genrsa", "-traditional", "-out", "ca.key", "2048"]);
        dir.openssl(&[
            "req",
            "-new",
            "-x509",
            "-days",
            "3650",
            "-key",
            "ca.key",
            "-subj",
            "/CN=ctrl-exec CA",
            "-out",
            "ca.crt",
        ]);
        dir.req_rsa("agent", 2048, &[]);
        dir.openssl(&[
            "x509",
            "-req",
            "-in",
            "agent.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "825",
            "-out",
            "agent.crt",
        ]);
        let ca = dir.read("ca.crt");
        let agent = dir.read("agent.crt");
        let info = cert_info_pem(&agent).unwrap();
        assert_eq!(info.cn, "web-01.example.com");
        assert!(!info.is_ca);
        assert_near(info.not_after, crate::time::now() + 825 * DAY);
        assert_eq!(
            info.spki_sha256,
            key_spki_sha256(&dir.read("agent.key")).unwrap()
        );
        assert!(verify_issued_by(&pem_certs(&agent)[0], &pem_certs(&ca)[0]));
        assert!(cert_info_pem(&ca).unwrap().is_ca);

        // Serial matches what openssl prints.
        let out = dir.openssl(&["x509", "-in", "agent.crt", "-noout", "-serial"]);
        assert_eq!(canonical_serial(&out), Some(info.serial.clone()));
        // Fingerprint matches openssl's.
        let out = dir.openssl(&[
            "x509",
            "-in",
            "agent.crt",
            "-noout",
            "-fingerprint",
            "-sha256",
        ]);
        assert_eq!(
            normalise_fingerprint(&out).map(|f| format!("sha256:{f}")),
            Some(info.fingerprint.clone())
        );
        // notAfter text matches our formatter.
        let out = dir.openssl(&["x509", "-in", "agent.crt", "-noout", "-enddate"]);
        let text = out.trim().trim_start_matches("notAfter=");
        assert_eq!(crate::time::openssl_date(info.not_after), text);

        // The Rust CA code can sign with the Perl CA's PKCS#1 key, and OpenSSL verifies it.
        let csr = check_csr(&dir.read("agent.csr"), Some("web-01.example.com")).unwrap();
        let cert = sign_csr(&ca, &dir.read("ca.key"), &csr, 365).unwrap();
        dir.write("renewed.crt", &cert);
        dir.openssl(&["verify", "-CAfile", "ca.crt", "renewed.crt"]);
        assert!(verify_issued_by(&pem_certs(&cert)[0], &pem_certs(&ca)[0]));

        // A v1 CA (no extensions) is accepted as issuer.
        dir.openssl(&[
            "x509",
            "-req",
            "-in",
            "agent.csr",
            "-signkey",
            "agent.key",
            "-days",
            "1",
            "-out",
            "v1self.crt",
        ]);
        let v1 = pem_certs(&dir.read("v1self.crt"));
        let (_, x) = X509Certificate::from_der(&v1[0]).unwrap();
        if x.version() == X509Version::V1 {
            assert!(verify_issued_by(&v1[0], &v1[0]));
        }
    }

    #[test]
    fn pem_certs_reads_every_certificate_in_order() {
        let (a, _) = create_ca(1).unwrap();
        let (b, key_b) = create_ca(1).unwrap();
        let bundle = format!("junk\n{a}{key_b}{b}");
        let ders = pem_certs(&bundle);
        assert_eq!(ders.len(), 2);
        assert_eq!(ders[0], pem_certs(&a)[0]);
        assert_eq!(ders[1], pem_certs(&b)[0]);
        assert!(pem_certs("").is_empty());
        assert!(cert_info_pem("").is_err());
        assert!(cert_info_der(b"\x30\x03\x02\x01\x00").is_err());
    }

    fn assert_near(got: i64, want: i64) {
        assert!(
            (got - want).abs() <= 60,
            "got {got}, want within 60 s of {want}"
        );
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A temp directory for openssl runs; `None` (test skipped) when openssl is missing.
    use crate::testutil::OpensslDir as Fixture;
}
