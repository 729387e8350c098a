//! The foundation every other Portcullis crate may use: small, general pieces with no
//! product decisions in them — national clouds and their endpoints, the clock, sealing and
//! random tokens, constant-time comparison, secrets that do not print, GUIDs, cookies, PEM
//! files, HTML escaping, the problem+json error body, retrying HTTP calls and a cached bearer
//! token.
//!
//! Depends on no other Portcullis crate (DESIGN.md §1, docs/architecture.md).

#![forbid(unsafe_code)]

pub mod cloud;
pub mod cookie;
pub mod html;
pub mod pem;
pub mod problem;
pub mod retry;
pub mod seal;
pub mod time;
pub mod token;

mod secret;

pub use secret::Secret;

/// Constant-time equality of two byte strings (tokens, signatures); lengths are not secret.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A GUID in its canonical 8-4-4-4-12 hex form (Entra tenant, object and device ids).
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A SHA-256 written as 64 hex digits (either case); `None` for anything else.
pub fn sha256_from_hex(s: &str) -> Option<[u8; 32]> {
    // Byte slicing below needs ASCII; from_str_radix alone would also take a leading '+'.
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `bytes` as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_and_constant_time_equality() {
        assert!(is_guid("9188040d-6c67-4c5b-b112-36a304b66dad"));
        assert!(!is_guid("9188040d6c674c5bb11236a304b66dad"));
        assert!(!is_guid("9188040d-6c67-4c5b-b112-36a304b66daz"));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn sha256_hex_round_trip() {
        let h = [0xabu8; 32];
        assert_eq!(sha256_from_hex(&to_hex(&h)), Some(h));
        assert_eq!(sha256_from_hex(&to_hex(&h).to_uppercase()), Some(h));
        assert_eq!(sha256_from_hex(&format!("+{}", &to_hex(&h)[1..])), None);
        assert_eq!(sha256_from_hex("abc"), None);
    }
}
