//! Error collection for configuration parsing: every problem is recorded with the key path it
//! belongs to (`routes[2].upstreams[0]`), and loading fails only after all of them are known.

use std::fmt;

/// One configuration problem, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `listeners[1].tls.certificates[0].key`; empty for file-level errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// All the errors of one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Accumulates errors while a file is converted into typed values.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    errors: Vec<ConfigError>,
}

impl Collector {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records the error of `r` under `key` and returns the value, if any.
    pub(crate) fn take<T, E: fmt::Display>(&mut self, key: &str, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(key, e.to_string());
                None
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn finish(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }
}
