//! Integration tests: the real `portcullis` binary over real sockets. One test binary so that
//! the gateway is linked once.

mod admin;
mod cli;
mod cluster;
mod demo;
mod enforcement;
mod harness;
mod identity;
mod ingress;
mod layout;
mod proxy;
mod store;
mod sync;
mod tls;
mod upgrade;
