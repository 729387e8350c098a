//! Device identity from a client certificate issued by the MDM's CA: the Intune device id in a
//! SAN URI (`IntuneDeviceId://{id}`), else the subject CN (or the certificate's serial) read as
//! a computer serial number and mapped to the Entra device id through Jamf inventory.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What a verified client certificate says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// From `IntuneDeviceId://{id}` (lower case).
    pub device_id: Option<String>,
    pub common_name: Option<String>,
    /// Hex, upper case.
    pub serial: String,
}

/// Parses a DER certificate (already verified by the TLS stack).
pub fn cert_identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut device_id = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(uri) = n {
                let lower = uri.to_ascii_lowercase();
                if let Some(id) = lower.strip_prefix("intunedeviceid://") {
                    let id = id.trim_matches('/');
                    if base::is_guid(id) {
                        device_id = Some(id.to_string());
                    }
                }
            }
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(CertIdentity {
        device_id,
        common_name,
        serial: cert.raw_serial_as_string().replace(':', "").to_ascii_uppercase(),
    })
}
