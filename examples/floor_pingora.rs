//! The floor of a reverse proxy on pingora 0.9, for `benches/load/floor.sh`: `upstream_peer`
//! only — no authentication, no header work, no metrics — served exactly as Portcullis serves
//! (`proxy::server_conf`'s settings: one single-threaded service per worker with its own
//! `SO_REUSEPORT` listener, `proxy::buffers`' 16 KiB write buffer, no work stealing, mimalloc).
//! What Portcullis costs above this is its own work.
//!
//! `cargo run --release --features floor --example floor_pingora -- LISTEN UPSTREAM WORKERS`

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::listeners::{ListenerConfig, TcpSocketOptions};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> std::result::Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, workers] = args.as_slice() else {
        return Err("usage: floor_pingora LISTEN UPSTREAM WORKERS".into());
    };
    let upstream: SocketAddr = upstream.parse().map_err(|e| format!("UPSTREAM: {e}"))?;
    let workers: usize = workers.parse().map_err(|e| format!("WORKERS: {e}"))?;
    let tmp = std::env::temp_dir();
    let conf = ServerConf {
        threads: workers,
        work_stealing: false,
        pid_file: tmp
            .join(format!("floor-pingora-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: tmp
            .join(format!("floor-pingora-{}.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for i in 0..workers {
        let proxy = pingora::proxy::http_proxy(&server.configuration, Floor { upstream });
        let mut service = Service::new(format!("floor {i}"), proxy);
        let mut sock = TcpSocketOptions::default();
        sock.so_reuseport = Some(workers > 1);
        service.add_listener(
            ListenerConfig::tcp(listen.clone())
                .l4_buffer(proxy::buffers())
                .tcp_socket_options(sock),
        );
        server.add_service(proxy::Worker::new(service));
    }
    server.run_forever()
}
