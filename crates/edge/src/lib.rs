//! The data plane on hyper 1 — issue 13's step 3, in progress and not yet wired into the
//! gateway (which still serves on pingora, `proxy`). What is here is the serving core the
//! floor benchmark showed reaches nginx's CPU per request: one thread per worker, each a
//! current-thread tokio runtime with its own `SO_REUSEPORT` copy of every listener; TLS with
//! rustls (the gateway's own `ServerConfig`: SNI resolver, client certificates, ALPN);
//! HTTP/1.1 and HTTP/2 (with upgrades) by hyper-util's auto builder; a graceful drain; and
//! forwarding to an upstream over per-worker connection pools, upgrades passed through; upstream
//! pools with round robin, failover and active health checks.
//!
//! May depend on `access` (the framework-free decision, header hygiene and rendered replies)
//! and what `proxy` may use; requests go to a [`serve::Handler`] with the facts of their
//! connection ([`serve::Conn`]).

pub mod forward;
pub mod pool;
pub mod respond;
pub mod serve;
