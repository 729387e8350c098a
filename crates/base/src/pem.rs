//! Reading PEM certificate files (listener certificates, client-certificate CAs, upstream
//! CAs, the Entra app's assertion certificate), with errors that name the file.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A PEM file with one or more certificates, leaf first.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: cannot read ({e})", path.display()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: contains no PEM certificate", path.display()));
    }
    Ok(certs)
}
