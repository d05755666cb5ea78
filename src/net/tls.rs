//! TLS configurations and certificate verifiers for every listener and client.
//!
//! Policy (reference surface.md 7.10): TLS 1.2 and 1.3 only, AEAD suites only
//! (AES-GCM, plus ChaCha20 on TLS 1.3), ring as the crypto provider.
//!
//! Verification is "chains to our private CA", never a name check: peers are
//! addressed by IP or by names the CA never saw, and Perl-era certificates are
//! X.509 v1 with no SAN, which webpki refuses. [`CaVerifier`] therefore
//! checks the end-entity certificate directly: issued by the configured CA
//! (issuer name and signature), inside its validity period. Identity beyond
//! that (which peer this is) is the caller's decision, made on the
//! peer certificate after the handshake.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};

use crate::pki;

/// The handshake-signature methods every verifier here shares: rustls's own
/// checks over the provider's algorithms (`self.algs`).
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
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

    fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
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
        .with_single_cert(identity.chain.clone(), identity.clone_key())
        .map_err(TlsError::Config)?;
    Ok(Arc::new(cfg))
}

/// A server without client authentication (the pairing listener, plain
/// HTTPS gateways).
pub fn plain_server(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.clone_key())
        .map_err(TlsError::Config)?;
    Ok(Arc::new(cfg))
}

/// A client presenting `identity` and accepting servers issued by `ca_der`.
pub fn mtls_client(identity: &Identity, ca_der: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = Arc::new(CaVerifier::new(ca_der)?);
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.clone_key())
        .map_err(TlsError::Config)?;
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
        })
    }

    fn check(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
        let info = pki::cert_info_der(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !pki::verify_issued_by(end_entity, &self.ca_der) {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        let now = now.as_secs() as i64;
        if now > info.not_after {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        if now < info.not_before {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        Ok(())
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
        self.check(end_entity, now)
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
        self.check(end_entity, now)
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
