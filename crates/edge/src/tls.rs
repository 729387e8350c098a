//! Downstream TLS: certificate loading and SNI selection for the HTTPS listeners.
//!
//! Files are read and checked here, every problem reported with its config key; the rustls
//! server configuration of each listener (certificates by SNI, the MDM CA's client-certificate
//! verifier, ALPN) is built once at start.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base::pem::read_certs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use config::{CertificateConfig, ConfigError, ListenerTls};

/// Chooses the certificate for a TLS handshake by SNI: exact name, then wildcard, then the
/// listener's first certificate.
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain with a leading dot (`.example.com` for `*.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SniResolver {
    /// Loads every certificate of a listener. All problems are returned, each with its key.
    pub fn load(tls: &ListenerTls) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut loaded = Vec::new();
        for c in &tls.certificates {
            match load_certified_key(c) {
                Ok(v) => loaded.push(v),
                Err(e) => errors.push(e),
            }
        }
        let Some(default) = loaded.first().map(|(k, _)| k.clone()) else {
            if errors.is_empty() {
                errors.push(ConfigError {
                    key: "tls.certificates".into(),
                    message: "no certificate".into(),
                });
            }
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (key, names) in loaded {
            for name in names {
                match name.strip_prefix('*') {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert_with(|| key.clone()),
                    None => exact.entry(name).or_insert_with(|| key.clone()),
                };
            }
        }
        Ok(Self {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(&format!(".{parent}")) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Reads a PEM chain and key, checks that they belong together, and returns the names the
/// certificate serves (configured names, else its SAN DNS names).
fn load_certified_key(c: &CertificateConfig) -> Result<(Arc<CertifiedKey>, Vec<String>), ConfigError> {
    let err = |field: &str, message: String| ConfigError {
        key: format!("{}.{field}", c.key_path),
        message,
    };
    let certs = read_certs(&c.cert).map_err(|m| err("cert", m))?;
    let key = PrivateKeyDer::from_pem_file(&c.key)
        .map_err(|e| err("key", format!("{}: no readable PEM private key ({e})", c.key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| err("key", format!("{}: unsupported private key ({e})", c.key.display())))?;
    let names = if c.server_names.is_empty() {
        san_dns_names(&certs[0]).map_err(|m| err("cert", format!("{}: {m}", c.cert.display())))?
    } else {
        c.server_names.clone()
    };
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        err(
            "key",
            format!("{} does not match {} ({e})", c.key.display(), c.cert.display()),
        )
    })?;
    Ok((Arc::new(ck), names))
}

fn san_dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, x509) = X509Certificate::from_der(cert.as_ref()).map_err(|e| format!("unparsable certificate ({e})"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(_) | GeneralName::OtherName(..) | GeneralName::RFC822Name(_) => {}
                GeneralName::URI(_) | GeneralName::DirectoryName(_) | GeneralName::X400Address(_) => {}
                GeneralName::EDIPartyName(_) | GeneralName::RegisteredID(_) => {}
            }
        }
    }
    Ok(names)
}

/// A client-certificate verifier for the MDM CA in `path`; clients without a certificate are
/// let through the handshake (they may still sign in with a device claim).
pub fn client_verifier(path: &Path) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate ({e})", path.display()))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// The server configuration of one TLS listener: certificates by SNI, client certificates
/// checked against the MDM CA when one is configured, ALPN `h2` (when HTTP/2 is on) and
/// `http/1.1`.
pub fn server_config(t: &ListenerTls, resolver: Arc<SniResolver>) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &t.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = if t.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// Loads every listener's TLS configuration (`None` for a plain listener); all problems are
/// returned with their keys.
pub fn load(cfg: &config::Config) -> Result<Vec<Option<Arc<rustls::ServerConfig>>>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let Some(t) = &l.tls else {
            out.push(None);
            continue;
        };
        match SniResolver::load(t) {
            Ok(r) => match server_config(t, Arc::new(r)) {
                Ok(c) => out.push(Some(Arc::new(c))),
                Err(message) => errors.push(ConfigError {
                    key: format!("listeners[{i}].tls.client_ca"),
                    message,
                }),
            },
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
