//! Portcullis: an access gateway that lets a request through to a company web app only when
//! the user is signed in with Microsoft Entra ID and the device is known and compliant.
//!
//! This crate is the top of the workspace: [`app`] wires the components of the crates below
//! into a running gateway, and `main.rs` is the command line. The components live in their own
//! crates (docs/architecture.md); they are re-exported here under their short names so the
//! integration tests and benchmarks reach them through one path.

#![forbid(unsafe_code)]

pub mod app;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "demo")]
pub mod devcert;
pub mod telemetry;

pub use access;
pub use admin;
pub use base;
pub use config;
pub use device;
pub use edge;
#[cfg(feature = "demo")]
pub use emulator;
pub use identity;
pub use landing;
pub use metrics;
pub use policy;
pub use store;
pub use sync;
