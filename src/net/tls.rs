//! TLS configurations and certificate verifiers for every listener and client.
//!
//! Policy (reference surface.md 7.10): TLS 1.2 and 1.3 only, AEAD suites only
//! (AES-GCM, plus ChaCha20 on TLS 1.3), ring as the crypto provider.
//!
//! Verification is "chains to our private CA", never a name check: peers are
//! addressed by IP or by names the CA never saw, and Perl-era certificates are
//! X.509 v1 with no SAN or EKU (reference protocol.md 6.2), which webpki
//! refuses. Nothing here hands a certificate to webpki, therefore:
//!
//! - [`CaVerifier`] checks the end-entity certificate with
//!   [`pki::verify_leaf`]: issued by the configured CA (CA constraints, issuer
//!   name, signature under the provider's algorithms), inside its validity
//!   period, not a CA, an EKU (when present) allowing the use.
//! - Handshake signatures (CertificateVerify, ServerKeyExchange) are checked
//!   against the certificate's SubjectPublicKeyInfo with the provider's
//!   algorithms ([`handshake_signature`]), not through rustls's helpers,
//!   which parse the certificate with webpki.
//! - Our own certificate and key are bound by comparing public keys with
//!   x509-parser ([`Identity::certified_key`]), not by rustls's
//!   `with_single_cert`, which also parses with webpki.
//!
//! Identity beyond "issued by our CA" (which peer this is) is the caller's
//! decision, made on the peer certificate after the handshake (by serial or
//! by a pinned public key).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error,
    InconsistentKeys, PeerMisbehaved, ServerConfig, SignatureScheme,
};

use crate::net::limits::{SERVER_SESSIONS, TICKETS_PER_HANDSHAKE, VERIFIED_LEAF_ENTRIES};
use crate::pki;

/// The handshake-signature methods every verifier here shares:
/// [`handshake_signature`] over the provider's algorithms (`self.algs`).
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            handshake_signature(message, cert, dss, &self.algs, false)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            handshake_signature(message, cert, dss, &self.algs, true)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

/// Why a TLS configuration could not be built.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM input held no usable certificate or key.
    Pem(String),
    /// rustls refused the configuration (e.g. key and certificate mismatch).
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem(m) => write!(f, "{m}"),
            TlsError::Config(e) => write!(f, "tls configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// A certificate chain and its private key, presented to peers.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first; extra certificates (such as the CA) follow.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Builds an identity from PEM text (the first certificate block is the leaf).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, TlsError> {
        let chain: Vec<CertificateDer<'static>> = pki::pem_certs(cert_pem)
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::Pem("no certificate in PEM".into()));
        }
        let key = pki::private_key_der(key_pem).map_err(|e| TlsError::Pem(e.to_string()))?;
        Ok(Identity { chain, key })
    }

    /// Appends a certificate to the presented chain (the pairing listener sends
    /// its CA so a client can pin it during the handshake).
    pub fn with_extra(mut self, der: Vec<u8>) -> Identity {
        self.chain.push(CertificateDer::from(der));
        self
    }

    /// The chain and a signing key for it, refusing a key that is not the
    /// leaf's. rustls's own `with_single_cert` makes the same check by
    /// parsing the leaf with webpki, which refuses X.509 v1 certificates
    /// (all a Perl-era CA issues), so the public keys are compared here.
    fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let signer = provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(TlsError::Config)?;
        let leaf = pki::cert_spki(&self.chain[0])
            .ok_or_else(|| TlsError::Pem("cannot parse the certificate".into()))?;
        // Every key type the ring provider loads reports its public key;
        // `None` would only come from a provider that cannot.
        if let Some(key_spki) = signer.public_key() {
            if key_spki.as_ref() != leaf.as_slice() {
                return Err(TlsError::Config(Error::InconsistentKeys(
                    InconsistentKeys::KeyMismatch,
                )));
            }
        }
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), signer)))
    }
}

/// Checks a TLS handshake signature against the peer certificate's public
/// key, like rustls's `verify_tls12_signature`/`verify_tls13_signature` but
/// without parsing the certificate with webpki (see the module comment).
/// TLS 1.3 allows only its own schemes, each naming one algorithm; a TLS 1.2
/// ECDSA scheme names the hash only, so any listed curve may match the key.
fn handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, Error> {
    let unadvertised = || Error::from(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme);
    // RFC 8446 4.2.3: no RSA PKCS#1 and no SHA-1 in TLS 1.3 (rustls's own
    // list of this is not public).
    let tls13_scheme = matches!(
        dss.scheme,
        SignatureScheme::ECDSA_NISTP256_SHA256
            | SignatureScheme::ECDSA_NISTP384_SHA384
            | SignatureScheme::ECDSA_NISTP521_SHA512
            | SignatureScheme::ED25519
            | SignatureScheme::RSA_PSS_SHA256
            | SignatureScheme::RSA_PSS_SHA384
            | SignatureScheme::RSA_PSS_SHA512
    );
    if tls13 && !tls13_scheme {
        return Err(unadvertised());
    }
    let candidates = algs
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, a)| *a)
        .ok_or_else(unadvertised)?;
    let candidates = if tls13 {
        &candidates[..candidates.len().min(1)]
    } else {
        candidates
    };
    let spki =
        pki::cert_spki(cert).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if pki::verify_with_spki(candidates, &spki, message, dss.signature()) {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(Error::InvalidCertificate(CertificateError::BadSignature))
    }
}

/// Whether a connection may go on after its handshake: a resumed session
/// skipped certificate verification, and a session outlives what it was
/// made from (rustls keeps one for up to a day), so the peer certificate it
/// carries must still be inside its validity period now. A full handshake
/// checked that already.
pub fn resumed_session_valid(conn: &rustls::CommonState, now: i64) -> Result<(), String> {
    if conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
        return Ok(());
    }
    let info = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| pki::cert_info_der(leaf).ok())
        .ok_or("resumed session without a readable peer certificate")?;
    if now > info.not_after {
        return Err("resumed session: the peer certificate has expired".into());
    }
    if now < info.not_before {
        return Err("resumed session: the peer certificate is not valid yet".into());
    }
    Ok(())
}

/// The ring provider restricted to the project's cipher policy.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    Arc::new(p)
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A server that requires a client certificate issued by `ca_der` (port 7443).
pub fn mtls_server(identity: &Identity, ca_der: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = Arc::new(CaVerifier::new(ca_der)?);
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key()?)));
    Ok(Arc::new(bounded_sessions(cfg)))
}

/// A server without client authentication (the pairing listener, plain
/// HTTPS gateways).
pub fn plain_server(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key()?)));
    Ok(Arc::new(bounded_sessions(cfg)))
}

/// `cfg` keeping at most [`SERVER_SESSIONS`] sessions, with
/// [`TICKETS_PER_HANDSHAKE`] tickets a handshake.
fn bounded_sessions(mut cfg: ServerConfig) -> ServerConfig {
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(SERVER_SESSIONS);
    cfg.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    cfg
}

/// A client presenting `identity` and accepting servers issued by `ca_der`.
pub fn mtls_client(identity: &Identity, ca_der: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = Arc::new(CaVerifier::new(ca_der)?);
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified_key()?)));
    Ok(Arc::new(cfg))
}

/// A client for first contact with a pairing listener: no CA is known yet, so
/// the server chain is recorded (and checked against a pin when one is given).
pub fn pairing_client(verifier: Arc<PairingVerifier>) -> Result<Arc<ClientConfig>, TlsError> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The server name handed to rustls: a DNS name when `host` is one, else a
/// placeholder (verifiers here never check names; an IP sends no SNI).
pub fn server_name(host: &str) -> ServerName<'static> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("ctrl-exec-peer").expect("static name is valid"))
}

/// Verifies that a peer's end-entity certificate was issued by one CA and is
/// within its validity period. No name checks (see the module comment).
#[derive(Debug)]
pub struct CaVerifier {
    ca_der: Vec<u8>,
    subjects: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
    verified: Mutex<VerifiedLeaves>,
}

/// Peer certificates this verifier has found issued by its CA, fit for a
/// purpose, and not a CA: what stays true of the same bytes. Keyed by the
/// SHA-256 of the whole certificate DER, bounded by
/// [`VERIFIED_LEAF_ENTRIES`] (oldest out first). Only time is checked again.
#[derive(Debug, Default)]
struct VerifiedLeaves {
    by_digest: HashMap<([u8; 32], pki::Purpose), Validity>,
    order: VecDeque<([u8; 32], pki::Purpose)>,
}

/// A remembered certificate's validity period, in unix seconds.
#[derive(Clone, Copy, Debug)]
struct Validity {
    not_before: i64,
    not_after: i64,
}

impl Validity {
    fn at(self, now: i64) -> Result<(), pki::LeafRefusal> {
        if now > self.not_after {
            Err(pki::LeafRefusal::Expired)
        } else if now < self.not_before {
            Err(pki::LeafRefusal::NotYetValid)
        } else {
            Ok(())
        }
    }
}

impl VerifiedLeaves {
    fn get(&self, key: &([u8; 32], pki::Purpose)) -> Option<Validity> {
        self.by_digest.get(key).copied()
    }

    fn insert(&mut self, key: ([u8; 32], pki::Purpose), validity: Validity) {
        if self.by_digest.insert(key, validity).is_some() {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > VERIFIED_LEAF_ENTRIES {
            if let Some(oldest) = self.order.pop_front() {
                self.by_digest.remove(&oldest);
            }
        }
    }
}

impl CaVerifier {
    /// A verifier for certificates issued by the CA certificate `ca_der`.
    pub fn new(ca_der: &[u8]) -> Result<CaVerifier, TlsError> {
        let subject = x509_parser::parse_x509_certificate(ca_der)
            .map_err(|e| TlsError::Pem(format!("cannot parse CA certificate: {e}")))?
            .1
            .subject()
            .as_raw()
            .to_vec();
        Ok(CaVerifier {
            ca_der: ca_der.to_vec(),
            subjects: vec![DistinguishedName::from(subject)],
            algs: provider().signature_verification_algorithms,
            verified: Mutex::new(VerifiedLeaves::default()),
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
        purpose: pki::Purpose,
    ) -> Result<(), Error> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let key = (pki::sha256(end_entity), purpose);
        let known = self.verified.lock().ok().and_then(|v| v.get(&key));
        let checked = match known {
            Some(validity) => validity.at(now),
            None => pki::verify_leaf(end_entity, &self.ca_der, now, purpose).map(|info| {
                let validity = Validity {
                    not_before: info.not_before,
                    not_after: info.not_after,
                };
                if let Ok(mut verified) = self.verified.lock() {
                    verified.insert(key, validity);
                }
            }),
        };
        checked.map_err(|refusal| Error::InvalidCertificate(certificate_error(&refusal)))
    }
}

/// The rustls error (and so the TLS alert) for a refused certificate.
fn certificate_error(refusal: &pki::LeafRefusal) -> CertificateError {
    use pki::LeafRefusal as R;
    match refusal {
        R::Unparsable => CertificateError::BadEncoding,
        R::IssuerNotCa | R::UnknownIssuer => CertificateError::UnknownIssuer,
        R::BadSignature => CertificateError::BadSignature,
        R::Expired => CertificateError::Expired,
        R::NotYetValid => CertificateError::NotValidYet,
        R::WrongPurpose => CertificateError::InvalidPurpose,
        R::UnknownCriticalExtension(_) => CertificateError::UnhandledCriticalExtension,
        R::CaAsLeaf => CertificateError::Other(rustls::OtherError(Arc::new(refusal.clone()))),
    }
}

impl ClientCertVerifier for CaVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity, now, pki::Purpose::Client)
            .map(|_| ClientCertVerified::assertion())
    }

    signature_checks!();
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity, now, pki::Purpose::Server)
            .map(|_| ServerCertVerified::assertion())
    }

    signature_checks!();
}

/// The client's verifier for a pairing listener.
///
/// Without a pin it accepts any server (first contact has no CA to check
/// against, as in the original) and records the chain. With a pin
/// (`--ca-fingerprint`), a chain that carries a certificate with that
/// SHA-256 fingerprint must have its leaf issued by it; a chain that carries
/// other certificates but not the pinned one is refused during the handshake;
/// a bare leaf (older servers send no CA) is accepted here and the caller
/// checks it against the received CA before storing anything.
#[derive(Debug)]
pub struct PairingVerifier {
    pin: Option<String>,
    seen: Mutex<Vec<Vec<u8>>>,
    algs: WebPkiSupportedAlgorithms,
}

impl PairingVerifier {
    /// `pin`: normalised lowercase hex SHA-256 of the CA certificate, if any.
    pub fn new(pin: Option<String>) -> PairingVerifier {
        PairingVerifier {
            pin,
            seen: Mutex::new(Vec::new()),
            algs: provider().signature_verification_algorithms,
        }
    }

    /// The chain the server presented (leaf first), once the handshake ran.
    pub fn presented_chain(&self) -> Vec<Vec<u8>> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl ServerCertVerifier for PairingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        if let Ok(mut seen) = self.seen.lock() {
            *seen = chain;
        }
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        if intermediates.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let pinned = intermediates.iter().find(|c| &pki::sha256_hex(c) == pin);
        match pinned {
            Some(ca) if pki::verify_issued_by(end_entity, ca) => {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    signature_checks!();
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use rustls::{ClientConnection, ServerConnection};
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::x509::X509Version;

    use super::*;
    use crate::testutil::OpensslDir;

    /// PEM texts of a PKI made the original's way, built once per test run.
    struct Pki {
        ca: String,
        caller: (String, String),
        callee: (String, String),
        stranger: (String, String),
        not_ca: String,
        under_not_ca: String,
        server_only: String,
        p384: (String, String),
    }

    fn pki() -> Option<&'static Pki> {
        static PKI: OnceLock<Option<Pki>> = OnceLock::new();
        PKI.get_or_init(|| {
            let d = OpensslDir::new("tls-perl-pki")?;
            d.perl_ca("ca", 4096);
            d.perl_leaf("ca", "caller", "caller.example.com", 4096, 825, &[]);
            d.perl_leaf("ca", "callee", "web-01.example.com", 4096, 825, &[]);
            // Another CA with the same name, as every Perl CA has.
            d.perl_ca("other", 2048);
            d.perl_leaf("other", "stranger", "web-01.example.com", 2048, 825, &[]);
            // A v3 certificate that says CA:FALSE, used as an issuer anyway.
            d.openssl(&[
                "req",
                "-new",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "notca.key",
                "-subj",
                "/CN=not a ca",
                "-days",
                "30",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-out",
                "notca.crt",
            ]);
            d.write("notca.serial", "01\n");
            d.perl_leaf("notca", "under", "web-01.example.com", 2048, 30, &[]);
            // A leaf whose EKU allows TLS servers only.
            d.write("server.ext", "extendedKeyUsage=serverAuth\n");
            d.perl_leaf(
                "ca",
                "srv",
                "web-01.example.com",
                2048,
                30,
                &["-extfile", "server.ext"],
            );
            // An ECDSA P-384 leaf from the RSA CA.
            d.openssl(&[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "p384.key",
            ]);
            d.openssl(&[
                "req", "-new", "-key", "p384.key", "-subj", "/CN=p384", "-out", "p384.csr",
            ]);
            d.openssl(&[
                "x509",
                "-req",
                "-in",
                "p384.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAserial",
                "ca.serial",
                "-days",
                "30",
                "-out",
                "p384.crt",
            ]);
            let pair = |n: &str| (d.read(&format!("{n}.crt")), d.read(&format!("{n}.key")));
            Some(Pki {
                ca: d.read("ca.crt"),
                caller: pair("caller"),
                callee: pair("callee"),
                stranger: pair("stranger"),
                not_ca: d.read("notca.crt"),
                under_not_ca: d.read("under.crt"),
                server_only: d.read("srv.crt"),
                p384: pair("p384"),
            })
        })
        .as_ref()
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from(pki::pem_certs(pem).remove(0))
    }

    fn at(secs: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs as u64))
    }

    fn now() -> UnixTime {
        at(crate::time::now())
    }

    fn as_client(v: &CaVerifier, cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
        v.verify_client_cert(cert, &[], now).map(|_| ())
    }

    fn as_server(v: &CaVerifier, cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
        let name = server_name("127.0.0.1");
        v.verify_server_cert(cert, &[], &name, &[], now).map(|_| ())
    }

    fn refused_with(r: Result<(), Error>, want: CertificateError) {
        match r {
            Err(Error::InvalidCertificate(got)) => assert_eq!(got, want),
            other => panic!("expected InvalidCertificate({want:?}), got {other:?}"),
        }
    }

    #[test]
    fn perl_v1_leaves_pass_both_verifiers() {
        let Some(p) = pki() else { return };
        let v = CaVerifier::new(&der(&p.ca)).unwrap();
        for leaf in [&p.caller.0, &p.callee.0] {
            let cert = der(leaf);
            let (_, x) = X509Certificate::from_der(&cert).unwrap();
            assert_eq!(x.version(), X509Version::V1, "openssl x509 -req makes v1");
            assert!(x.extensions().is_empty(), "no SAN, no EKU");
            as_client(&v, &cert, now()).unwrap();
            as_server(&v, &cert, now()).unwrap();
        }
    }

    #[test]
    fn leaf_from_another_ca_with_the_same_name_is_refused() {
        let Some(p) = pki() else { return };
        let v = CaVerifier::new(&der(&p.ca)).unwrap();
        let stranger = der(&p.stranger.0);
        refused_with(
            as_client(&v, &stranger, now()),
            CertificateError::BadSignature,
        );
        refused_with(
            as_server(&v, &stranger, now()),
            CertificateError::BadSignature,
        );
    }

    #[test]
    fn expired_and_not_yet_valid_leaves_are_refused() {
        let Some(p) = pki() else { return };
        let v = CaVerifier::new(&der(&p.ca)).unwrap();
        let cert = der(&p.callee.0);
        let info = pki::cert_info_der(&cert).unwrap();
        as_client(&v, &cert, at(info.not_after)).unwrap();
        refused_with(
            as_client(&v, &cert, at(info.not_after + 1)),
            CertificateError::Expired,
        );
        refused_with(
            as_server(&v, &cert, at(info.not_before - 1)),
            CertificateError::NotValidYet,
        );
    }

    #[test]
    fn leaf_issued_by_a_non_ca_is_refused() {
        let Some(p) = pki() else { return };
        let v = CaVerifier::new(&der(&p.not_ca)).unwrap();
        // The signature itself is good: only the issuer's CA:FALSE refuses it.
        let (leaf, issuer) = (der(&p.under_not_ca), der(&p.not_ca));
        let (_, x) = X509Certificate::from_der(&leaf).unwrap();
        let (_, i) = X509Certificate::from_der(&issuer).unwrap();
        assert!(x.verify_signature(Some(i.public_key())).is_ok());
        refused_with(
            as_client(&v, &der(&p.under_not_ca), now()),
            CertificateError::UnknownIssuer,
        );
    }

    #[test]
    fn broken_signature_is_refused() {
        let Some(p) = pki() else { return };
        let v = CaVerifier::new(&der(&p.ca)).unwrap();
        let mut bytes = der(&p.callee.0).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        refused_with(
            as_client(&v, &CertificateDer::from(bytes), now()),
            CertificateError::BadSignature,
        );
    }

    #[test]
    fn a_remembered_leaf_is_still_checked_for_time_purpose_and_bytes() {
        let Some(p) = pki() else { return };
        let v = CaVerifier::new(&der(&p.ca)).unwrap();
        let cert = der(&p.callee.0);
        let info = pki::cert_info_der(&cert).unwrap();
        as_client(&v, &cert, now()).unwrap();
        as_client(&v, &cert, now()).unwrap();
        refused_with(
            as_client(&v, &cert, at(info.not_after + 1)),
            CertificateError::Expired,
        );
        refused_with(
            as_client(&v, &cert, at(info.not_before - 1)),
            CertificateError::NotValidYet,
        );
        // One flipped bit is another certificate, verified afresh.
        let mut bytes = cert.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        refused_with(
            as_client(&v, &CertificateDer::from(bytes), now()),
            CertificateError::BadSignature,
        );
        // A server-only leaf remembered as a server is still no client.
        let srv = der(&p.server_only);
        as_server(&v, &srv, now()).unwrap();
        refused_with(as_client(&v, &srv, now()), CertificateError::InvalidPurpose);
    }

    #[test]
    fn remembered_leaves_are_bounded_oldest_out_first() {
        let mut leaves = VerifiedLeaves::default();
        let validity = Validity {
            not_before: 0,
            not_after: i64::MAX,
        };
        let key = |i: usize| (pki::sha256(&i.to_le_bytes()), pki::Purpose::Client);
        for i in 0..VERIFIED_LEAF_ENTRIES + 10 {
            leaves.insert(key(i), validity);
            leaves.insert(key(i), validity);
        }
        assert_eq!(leaves.by_digest.len(), VERIFIED_LEAF_ENTRIES);
        assert_eq!(leaves.order.len(), VERIFIED_LEAF_ENTRIES);
        assert!(leaves.get(&key(9)).is_none());
        assert!(leaves.get(&key(10)).is_some());
        assert!(leaves.get(&key(VERIFIED_LEAF_ENTRIES + 9)).is_some());
    }

    #[test]
    fn eku_present_must_allow_the_use() {
        let Some(p) = pki() else { return };
        let v = CaVerifier::new(&der(&p.ca)).unwrap();
        let srv = der(&p.server_only);
        as_server(&v, &srv, now()).unwrap();
        refused_with(as_client(&v, &srv, now()), CertificateError::InvalidPurpose);
    }

    #[test]
    fn a_ca_certificate_cannot_be_a_peer() {
        let Some(p) = pki() else { return };
        let ca = der(&p.ca);
        let v = CaVerifier::new(&ca).unwrap();
        assert!(as_client(&v, &ca, now()).is_err());
    }

    /// Drives a handshake in memory; `Err` is the first side's error.
    fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Result<(), Error> {
        connected(client, server).map(|_| ())
    }

    /// Both ends of an in-memory handshake, once it finished.
    fn connected(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> Result<(ClientConnection, ServerConnection), Error> {
        let mut c = ClientConnection::new(client, server_name("127.0.0.1"))?;
        let mut s = ServerConnection::new(server)?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok((c, s));
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn a_resumed_session_is_held_to_the_peer_certificates_validity() {
        let Some(p) = pki() else { return };
        let ca = der(&p.ca);
        let callee = Identity::from_pem(&p.callee.0, &p.callee.1).unwrap();
        let caller = Identity::from_pem(&p.caller.0, &p.caller.1).unwrap();
        let (server, client) = (
            mtls_server(&callee, &ca).unwrap(),
            mtls_client(&caller, &ca).unwrap(),
        );
        let now = crate::time::now();
        let (c, s) = connected(client.clone(), server.clone()).unwrap();
        assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
        // A full handshake verified the certificate itself.
        resumed_session_valid(&s, i64::MAX).unwrap();
        resumed_session_valid(&c, i64::MAX).unwrap();
        // One ticket a handshake keeps a client resuming connection after
        // connection.
        for _ in 0..3 {
            let (c, s) = connected(client.clone(), server.clone()).unwrap();
            assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
            assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        }
        let (c, s) = connected(client, server).unwrap();
        // The session carries the peer certificate, for the caller's
        // identity check by serial.
        assert_eq!(s.peer_certificates().unwrap()[0], der(&p.caller.0));
        resumed_session_valid(&s, now).unwrap();
        resumed_session_valid(&c, now).unwrap();
        let caller_info = pki::cert_info_pem(&p.caller.0).unwrap();
        let callee_info = pki::cert_info_pem(&p.callee.0).unwrap();
        let expired = resumed_session_valid(&s, caller_info.not_after + 1).unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
        let early = resumed_session_valid(&c, callee_info.not_before - 1).unwrap_err();
        assert!(early.contains("not valid yet"), "{early}");
    }

    fn client_with(
        id: &Identity,
        ca: &[u8],
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<ClientConfig> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaVerifier::new(ca).unwrap()))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                id.certified_key().unwrap(),
            )));
        Arc::new(cfg)
    }

    #[test]
    fn perl_rsa_identities_handshake_over_tls13_and_tls12() {
        let Some(p) = pki() else { return };
        let ca = der(&p.ca);
        let callee = Identity::from_pem(&p.callee.0, &p.callee.1).unwrap();
        let caller = Identity::from_pem(&p.caller.0, &p.caller.1).unwrap();
        let server = mtls_server(&callee, &ca).unwrap();
        handshake(mtls_client(&caller, &ca).unwrap(), server.clone()).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            handshake(client_with(&caller, &ca, version), server.clone())
                .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        }
        // A client certificate from another CA is refused by the server.
        let stranger = Identity::from_pem(&p.stranger.0, &p.stranger.1).unwrap();
        let err =
            handshake(client_with(&stranger, &ca, &rustls::version::TLS13), server).unwrap_err();
        assert!(matches!(err, Error::InvalidCertificate(_)), "{err:?}");
        // The plain server serves a v1 certificate too.
        let plain = plain_server(&caller).unwrap();
        handshake(mtls_client(&callee, &ca).unwrap(), plain).unwrap();
    }

    #[test]
    fn ecdsa_p384_leaf_from_an_rsa_ca_handshakes() {
        let Some(p) = pki() else { return };
        let ca = der(&p.ca);
        let ec = Identity::from_pem(&p.p384.0, &p.p384.1).unwrap();
        let callee = Identity::from_pem(&p.callee.0, &p.callee.1).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            handshake(
                client_with(&ec, &ca, version),
                mtls_server(&callee, &ca).unwrap(),
            )
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
            handshake(
                client_with(&callee, &ca, version),
                mtls_server(&ec, &ca).unwrap(),
            )
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        }
    }

    #[test]
    fn identity_with_a_key_that_is_not_the_certificates_is_refused() {
        let Some(p) = pki() else { return };
        let wrong = Identity::from_pem(&p.callee.0, &p.caller.1).unwrap();
        match mtls_server(&wrong, &der(&p.ca)) {
            Err(TlsError::Config(Error::InconsistentKeys(InconsistentKeys::KeyMismatch))) => {}
            other => panic!("expected a key mismatch, got {other:?}"),
        }
    }
}
