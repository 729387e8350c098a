//! Devices: identifying the device of a request, computing its posture from the store, and
//! the posture cache the request path reads (with the change follower that keeps it current).
//!
//! May depend on `policy` (posture types), `store` (read traits), `config` types. Never on
//! `proxy`, `admin` or `sync`.

pub mod cache;
pub mod changes;
pub mod identify;
pub mod posture;

pub use cache::{CacheSettings, Lookup, PostureCache};
