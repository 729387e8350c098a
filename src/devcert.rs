//! Development certificates: a throw-away CA and a server certificate signed by it, made at
//! run time (no private key is ever committed). Used by `portcullis demo`.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Where the generated files were written.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes `ca.pem`, `<stem>.pem` and `<stem>-key.pem` into `dir`; the certificate is valid
/// for `names` (DNS names or IP addresses).
pub fn generate(dir: &Path, stem: &str, names: &[&str]) -> Result<DevCerts, DevCertError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Portcullis development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
    let cert = leaf.signed_by(&key, &issuer)?;

    let out = DevCerts {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
    };
    write(&out.ca_cert, ca_cert.pem())?;
    write(&out.cert, cert.pem())?;
    write_private(&out.key, key.serialize_pem())?;
    Ok(out)
}

fn write(path: &Path, text: String) -> Result<(), DevCertError> {
    std::fs::write(path, text).map_err(|source| DevCertError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, text: String) -> Result<(), DevCertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| DevCertError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(text.as_bytes()).map_err(|source| DevCertError::Write {
        path: path.to_path_buf(),
        source,
    })
}
