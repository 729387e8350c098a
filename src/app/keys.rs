//! Every key the gateway derives or takes from the environment, read in one place that
//! `check-config` runs too:
//!
//! - the key sealing secrets inside the run-time settings: `PORTCULLIS_SETTINGS_KEY_FILE` or
//!   `PORTCULLIS_SETTINGS_KEY` (32 bytes, base64), else derived from `session.cookie_key`, else
//!   random for this process (a client secret set at run time then does not survive a restart);
//! - the key signing `return_to` URLs: derived from `session.cookie_key` (so every node
//!   agrees), else random for this process.
//!
//! A failed random source is an error here, never an empty key.

use std::sync::Arc;

use base::seal::Sealer;
use base64::Engine;
use config::{Config, ConfigError};

/// Where environment variables come from: the process in production, a map in tests (no
/// `set_var`).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

pub const SETTINGS_KEY: &str = "PORTCULLIS_SETTINGS_KEY";
pub const SETTINGS_KEY_FILE: &str = "PORTCULLIS_SETTINGS_KEY_FILE";

/// The keys of one gateway process.
pub struct Keys {
    /// Seals the client secret inside the settings document.
    pub settings: Sealer,
    /// The settings key survives a restart (it came from the environment or the cookie key).
    pub settings_persistent: bool,
    /// Signs `return_to` URLs of the custom landing.
    pub return_to: Arc<[u8]>,
}

impl Keys {
    /// Reads and derives every key; all problems are returned, each with its variable or key.
    pub fn load(cfg: &Config, env: &dyn Env) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let settings = settings_key(cfg, env).map_err(|e| errors.push(e)).ok();
        let return_to = return_key(cfg).map_err(|e| errors.push(e)).ok();
        match (settings, return_to) {
            (Some((settings, settings_persistent)), Some(return_to)) if errors.is_empty() => Ok(Self {
                settings,
                settings_persistent,
                return_to: return_to.into(),
            }),
            _ => Err(errors),
        }
    }
}

fn error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

fn sealer_from_base64(key: &str, text: &str) -> Result<Sealer, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| error(key, "is not base64"))?;
    Sealer::new(&bytes).map_err(|_| error(key, format!("must decode to 32 bytes, not {}", bytes.len())))
}

fn derived(cookie_key: &base::Secret, purpose: &[u8]) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, cookie_key.expose().as_bytes());
    ring::hmac::sign(&key, purpose)
}

fn settings_key(cfg: &Config, env: &dyn Env) -> Result<(Sealer, bool), ConfigError> {
    if let Some(path) = env.var(SETTINGS_KEY_FILE) {
        let text = std::fs::read_to_string(&path).map_err(|e| error(SETTINGS_KEY_FILE, format!("{path}: {e}")))?;
        return sealer_from_base64(SETTINGS_KEY_FILE, &text).map(|s| (s, true));
    }
    if let Some(text) = env.var(SETTINGS_KEY) {
        return sealer_from_base64(SETTINGS_KEY, &text).map(|s| (s, true));
    }
    if let Some(k) = &cfg.session.cookie_key {
        return Sealer::new(derived(k, b"portcullis settings").as_ref())
            .map(|s| (s, true))
            .map_err(|e| error("session.cookie_key", e.to_string()));
    }
    Sealer::random()
        .map(|s| (s, false))
        .map_err(|e| error(SETTINGS_KEY, format!("no key given and none can be made: {e}")))
}

fn return_key(cfg: &Config) -> Result<Vec<u8>, ConfigError> {
    match &cfg.session.cookie_key {
        Some(k) => Ok(derived(k, b"portcullis return_to").as_ref().to_vec()),
        None => base::seal::random_token(32).map(String::into_bytes).map_err(|e| {
            error(
                "session.cookie_key",
                format!("not set, and no random key can be made: {e}"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct MapEnv(HashMap<&'static str, String>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn env(pairs: &[(&'static str, &str)]) -> MapEnv {
        MapEnv(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    fn config(cookie_key: Option<&str>) -> Config {
        let mut toml = String::from(
            "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n[upstreams.u]\naddresses = [\"127.0.0.1:2\"]\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\nrequire = \"none\"\n",
        );
        if let Some(k) = cookie_key {
            toml.push_str(&format!("[session]\ncookie_key = \"{k}\"\n"));
        }
        Config::parse(&toml, std::path::Path::new(".")).expect("test config")
    }

    const KEY32: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    #[test]
    fn settings_key_from_the_environment_wins_and_survives_restarts() {
        let cfg = config(None);
        let a = Keys::load(&cfg, &env(&[(SETTINGS_KEY, KEY32)])).unwrap();
        let b = Keys::load(&cfg, &env(&[(SETTINGS_KEY, KEY32)])).unwrap();
        assert!(a.settings_persistent);
        let sealed = a.settings.seal("p", b"secret").unwrap();
        assert_eq!(b.settings.open("p", &sealed).unwrap(), b"secret");
    }

    #[test]
    fn bad_keys_are_named() {
        let cfg = config(None);
        let e = Keys::load(&cfg, &env(&[(SETTINGS_KEY, "not base64 !")])).err().unwrap();
        assert_eq!(e[0].key, SETTINGS_KEY);
        assert!(e[0].message.contains("base64"), "{}", e[0].message);
        let e = Keys::load(&cfg, &env(&[(SETTINGS_KEY, "c2hvcnQ=")])).err().unwrap();
        assert!(e[0].message.contains("32 bytes, not 5"), "{}", e[0].message);
        let e = Keys::load(&cfg, &env(&[(SETTINGS_KEY_FILE, "/nonexistent/key")]))
            .err()
            .unwrap();
        assert_eq!(e[0].key, SETTINGS_KEY_FILE);
        assert!(e[0].message.contains("/nonexistent/key"), "{}", e[0].message);
    }

    #[test]
    fn key_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{KEY32}\n")).unwrap();
        let cfg = config(None);
        let from_file = Keys::load(&cfg, &env(&[(SETTINGS_KEY_FILE, path.to_str().unwrap())])).unwrap();
        let from_var = Keys::load(&cfg, &env(&[(SETTINGS_KEY, KEY32)])).unwrap();
        let sealed = from_file.settings.seal("p", b"x").unwrap();
        assert_eq!(from_var.settings.open("p", &sealed).unwrap(), b"x");
    }

    #[test]
    fn cookie_key_derives_both_keys_the_same_on_every_node() {
        let cfg = config(Some("a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="));
        let a = Keys::load(&cfg, &env(&[])).unwrap();
        let b = Keys::load(&cfg, &env(&[])).unwrap();
        assert!(a.settings_persistent);
        assert_eq!(a.return_to, b.return_to);
        assert_eq!(a.return_to.len(), 32);
        let sealed = a.settings.seal("p", b"x").unwrap();
        assert_eq!(b.settings.open("p", &sealed).unwrap(), b"x");
    }

    #[test]
    fn without_any_key_both_are_random_per_process_and_never_empty() {
        let cfg = config(None);
        let a = Keys::load(&cfg, &env(&[])).unwrap();
        let b = Keys::load(&cfg, &env(&[])).unwrap();
        assert!(!a.settings_persistent);
        assert!(!a.return_to.is_empty());
        assert_ne!(a.return_to, b.return_to);
        let sealed = a.settings.seal("p", b"x").unwrap();
        assert!(b.settings.open("p", &sealed).is_none());
    }
}
