//! Portcullis: an access gateway that lets a request through to a company web app only when
//! the user is signed in with Microsoft Entra ID and the device is known and compliant.
//!
//! Dependency direction: `main → app → {proxy, admin} → {metrics, config types}`;
//! see DESIGN.md §1.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cloud;
pub mod config;
pub mod demo;
pub mod devcert;
pub mod device;
pub mod emulator;
pub mod identity;
pub mod landing;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod settings;
pub mod store;
pub mod sync;
pub mod telemetry;
