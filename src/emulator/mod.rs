//! Stand-ins for the services Portcullis talks to, served on loopback for the demo, the tests
//! and the benchmarks. Today: the demo upstream app. May depend on nothing but axum/tokio.

pub mod upstream;
