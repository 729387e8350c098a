//! Sealing and randomness: sealed values (cookies, session rows, stored secrets) are ChaCha20-Poly1305 with a random
//! nonce, base64url: opaque, and impossible to forge or alter without the key. Random tokens
//! come from the system's random source; when it fails the caller gets an error, never an
//! empty or predictable value.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Seals and opens cookie values with one key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

#[derive(Debug, thiserror::Error)]
pub enum SealerError {
    #[error("the cookie key must be 32 bytes")]
    KeyLength,
    #[error("no randomness available")]
    Random,
}

impl Sealer {
    pub fn new(key: &[u8]) -> Result<Self, SealerError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| SealerError::KeyLength)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// A sealer with a fresh random key.
    pub fn random() -> Result<Self, SealerError> {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).map_err(|_| SealerError::Random)?;
        Self::new(&k)
    }

    /// `purpose` binds the value to one use (a session cookie cannot pass as a login cookie).
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, SealerError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealerError::Random)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealerError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The plaintext, or `None` for anything not sealed by this key for this purpose.
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > 8192 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Random base64url text from `bytes` random bytes (session ids, state, nonce, PKCE).
pub fn random_token(bytes: usize) -> Result<String, SealerError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| SealerError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let s = Sealer::random().unwrap();
        let sealed = s.seal("session", b"abc").unwrap();
        assert_eq!(s.open("session", &sealed).unwrap(), b"abc");
        assert!(s.open("login", &sealed).is_none(), "purpose is bound");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(s.open("session", &URL_SAFE_NO_PAD.encode(bytes)).is_none());
        assert!(
            Sealer::random().unwrap().open("session", &sealed).is_none(),
            "another key"
        );
        assert!(s.open("session", "not base64 !").is_none());
        assert!(s.open("session", "").is_none());
        assert!(Sealer::new(&[0; 16]).is_err());
    }
}
