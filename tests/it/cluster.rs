//! Several gateway processes on one PostgreSQL database (a fresh schema per test): posture
//! changes reach every node, settings saved on one node apply on the others, a browser
//! session started on one node continues on another.

use std::time::Duration;

use portcullis::store::postgres::{testing, PgStore};
use portcullis::store::*;
use serde_json::json;

use crate::harness::{client, poll_until, pool, Emulator, Gateway, Upstream};
use crate::identity::Browser;

const ADMIN: &str = "cluster-admin-token-0123456789";
/// Every node shares the session key, so a session cookie sealed on one opens on another.
const COOKIE_KEY: &str = "Y2x1c3Rlci1zZXNzaW9uLWNvb2tpZS1rZXktMzJieXQ=";

const ALICE_DEVICE: &str = "d1000000-0000-4000-8000-00000000000a";

pub struct Cluster {
    pub emu: Emulator,
    _app: Upstream,
    /// With TLS listeners: the directory of the certificates every node serves (one CA).
    pub certs: Option<tempfile::TempDir>,
    /// The nodes' TLS ports, when they have TLS listeners.
    pub tls_ports: Vec<u16>,
    /// The store, as the leader's sync would write it.
    pub store: PgStore,
    pub nodes: Vec<Gateway>,
}

fn now() -> i64 {
    portcullis::base::time::unix_now_i64()
}

impl Cluster {
    /// `n` nodes, the demo personas' rows in the database; `poll` is each node's change-log
    /// poll (the fallback to LISTEN/NOTIFY).
    pub async fn start(n: usize, poll: &str, extra: &str) -> Self {
        Self::launch(n, poll, "enabled = false", extra, false).await
    }

    /// `n` nodes syncing from the emulator (one leads at a time), with `[sync]` settings.
    pub async fn start_syncing(n: usize, sync: &str) -> Self {
        Self::launch(n, "1s", sync, "", false).await
    }

    /// Like `start`, every node with a TLS listener for `localhost` (certificates from one
    /// CA, `ca.pem` in `certs`), its callback registered with the emulator.
    pub async fn start_tls(n: usize) -> Self {
        Self::launch(n, "1s", "enabled = false", "", true).await
    }

    async fn launch(n: usize, poll: &str, sync: &str, extra: &str, tls: bool) -> Self {
        let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
        let certs = tls.then(|| {
            let d = tempfile::tempdir().unwrap();
            crate::harness::make_certs(d.path(), &["localhost"]);
            d
        });
        let mut tls_ports = Vec::new();
        let (settings, schema) = testing::fresh_schema().await.expect("PostgreSQL for the tests");
        let store = PgStore::open(&settings).await.unwrap();
        portcullis::demo::seed(&store, now()).await.unwrap();
        let url = testing::url_for_schema(&schema);
        let digest = ring::digest::digest(&ring::digest::SHA256, ADMIN.as_bytes());
        let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        // `{emulator}` in the extra sections is the emulator's base URL (for `[jamf] url`).
        let extra = extra.replace("{emulator}", &emu.url);
        let mut nodes = Vec::new();
        for i in 0..n {
            let body = format!(
                "{}{}\n[store]\nurl = \"{url}\"\n[device]\nchange_poll_interval = \"{poll}\"\n[sync]\n{sync}\nnode_name = \"node-{i}\"\n[session]\ncookie_key = \"{COOKIE_KEY}\"\n{extra}\n[[routes]]\nupstream = \"app\"\n",
                emu.entra_section(""),
                pool("app", &[app.addr], ""),
            );
            let env = [("PORTCULLIS__ADMIN__TOKEN_SHA256", hash.clone())];
            let node = match &certs {
                Some(dir) => {
                    let port = crate::harness::free_port();
                    tls_ports.push(port);
                    emu.state.register_redirect(
                        portcullis::emulator::personas::GATEWAY_CLIENT_ID,
                        &format!("https://localhost:{port}/.portcullis/callback"),
                    );
                    let listener = crate::tls::tls_listener(dir.path(), port, &["localhost"]);
                    Gateway::start_full(&body, |_| listener, &env).await
                }
                None => Gateway::start_env(&body, &env).await,
            };
            nodes.push(node);
        }
        Self {
            emu,
            _app: app,
            certs,
            tls_ports,
            store,
            nodes,
        }
    }

    /// The status node `i` gives a persona's bearer request.
    pub async fn status(&self, i: usize, persona: &str) -> u16 {
        client()
            .get(self.nodes[i].url("/"))
            .bearer_auth(self.emu.token(&format!("persona={persona}")).await)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn alice(compliant: bool) -> EntraDevice {
    crate::enforcement::entra(ALICE_DEVICE, Some(compliant), true, now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posture_change_reaches_every_node_within_a_second_by_notify() {
    // A 30 s poll: only LISTEN/NOTIFY can bring the change this fast.
    let c = Cluster::start(2, "30s", "").await;
    for i in 0..2 {
        assert_eq!(c.status(i, "alice").await, 200, "node {i}");
    }
    for (round, compliant) in [false, true, false].into_iter().enumerate() {
        c.store.upsert_entra_devices(&[alice(compliant)]).await.unwrap();
        let want = if compliant { 200 } else { 403 };
        for i in 0..2 {
            let (_, took) = poll_until("the change enforced", Duration::from_secs(5), || async {
                match c.status(i, "alice").await {
                    s if s == want => Ok(()),
                    s => Err(s.to_string()),
                }
            })
            .await;
            assert!(took < Duration::from_secs(1), "round {round}, node {i}: {took:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_saved_on_one_node_apply_on_the_other() {
    let c = Cluster::start(2, "1s", "").await;
    let dave_page = |i: usize| {
        let c = &c;
        async move {
            client()
                .get(c.nodes[i].url("/"))
                .bearer_auth(c.emu.token("persona=dave").await)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(dave_page(1).await.contains("Enroll this Mac"));
    let api = format!("http://{}/api/v1/conditional-access", c.nodes[0].admin);
    let r = client().get(&api).bearer_auth(ADMIN).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let doc: serde_json::Value = r.json().await.unwrap();
    let body = json!({
        "enabled": false, "connection_type": "manual", "national_cloud": "global",
        "tenant_id": doc["tenant_id"], "application_id": doc["application_id"],
        "landing": { "kind": "access_denied" },
    });
    let r = client()
        .put(&api)
        .bearer_auth(ADMIN)
        .header("if-match", etag)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (_, took) = poll_until("node 1 applied node 0's save", Duration::from_secs(5), || async {
        let p = dave_page(1).await;
        if p.contains("Access denied") {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
    assert!(
        took < Duration::from_millis(1500),
        "settings reached node 1 after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_started_on_one_node_continues_on_another() {
    // TLS listeners: the session cookie is `__Host-` and Secure.
    let c = Cluster::start_tls(2).await;
    let ca = c.certs.as_ref().unwrap().path().join("ca.pem");
    let a = Browser::new(&ca, c.tls_ports[0]);
    let r = a.sign_in("/hello", "alice").await;
    assert_eq!(r.status(), 200, "signed in on node 0");
    // The same browser (its cookie jar; cookies do not care for ports) against node 1.
    let b = a.on_port(c.tls_ports[1]);
    let r = b.navigate(&format!("{}/hello", b.base)).await;
    assert_eq!(r.status(), 200, "the session continues on node 1: {:?}", r.headers());
    let body = r.text().await.unwrap();
    assert!(body.contains("alice@contoso.test"), "{body}");
}

/// Entra devices in the store, and the Entra cursor.
async fn progress(store: &PgStore) -> (i64, Option<String>) {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entra_devices")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let cursor = store.cursor("entra").await.unwrap();
    (n, cursor)
}

/// The node whose log says it leads the sync, once one does.
async fn leader(c: &Cluster, except: Option<usize>) -> (usize, Duration) {
    poll_until("a node leads the sync", Duration::from_secs(15), || async {
        (0..c.nodes.len())
            .filter(|i| Some(*i) != except)
            .find(|i| c.nodes[*i].logs().contains("this node leads the sync"))
            .ok_or_else(|| "no leader yet".to_string())
    })
    .await
}

async fn seed_directory(c: &Cluster, devices: u32) {
    let r = client()
        .post(format!("{}/_emulator/directory/seed", c.emu.url))
        .json(&json!({ "devices": devices }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

const SYNCING: &str = "interval = \"1s\"\nlease_ttl = \"3s\"\npage_size = 20\nintune = false";

/// The leader is paused (SIGSTOP) in the middle of a round past its lease: the other node
/// takes over within the lease time and finishes the round from the stored cursor; resumed
/// (SIGCONT), the old leader's next write is refused by the term and nothing of it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_out_when_it_resumes() {
    let c = Cluster::start_syncing(2, SYNCING).await;
    seed_directory(&c, 6000).await; // 6,004 devices, 300 pages of 20
    let (old, _) = leader(&c, None).await;
    poll_until("the first round part-way", Duration::from_secs(20), || async {
        match progress(&c.store).await {
            (n, _) if n >= 200 => Ok(()),
            (n, _) => Err(format!("{n} devices")),
        }
    })
    .await;
    c.nodes[old].signal("STOP");
    let (new, took) = leader(&c, Some(old)).await;
    assert_ne!(new, old);
    // The 3 s lease, plus the 3 s after which PostgreSQL ends the session the paused leader left
    // in the middle of a transaction (its change-log lock), plus a round.
    assert!(
        took < Duration::from_secs(8),
        "takeover after a 3 s lease took {took:?}"
    );
    eprintln!("leader failover (SIGSTOP): {took:?}");
    c.nodes[old].signal("CONT");
    poll_until("the resumed leader fenced out", Duration::from_secs(15), || async {
        let log = c.nodes[old].logs();
        if log.contains("refused: the sync lease is no longer this node's term") {
            Ok(())
        } else {
            Err(log.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
        }
    })
    .await;
    poll_until("the new leader finished the round", Duration::from_secs(40), || async {
        match progress(&c.store).await {
            (6004, Some(cursor)) if cursor.contains("$deltatoken=") => Ok(()),
            (n, cursor) => {
                assert!(n <= 6004, "no device was written twice as two rows ({n})");
                Err(format!("{n} devices, cursor {cursor:?}"))
            }
        }
    })
    .await;
}

/// kill -9 of the leader: another node takes over within the lease time and resumes from the
/// stored delta cursor; every device ends up in the store once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_from_a_killed_leader_and_resumes() {
    let mut c = Cluster::start_syncing(2, SYNCING).await;
    seed_directory(&c, 6000).await;
    let (old, _) = leader(&c, None).await;
    poll_until("the first round part-way", Duration::from_secs(20), || async {
        match progress(&c.store).await {
            (n, _) if n >= 200 => Ok(()),
            (n, _) => Err(format!("{n} devices")),
        }
    })
    .await;
    let (before, cursor) = progress(&c.store).await;
    assert!(
        cursor.is_some_and(|c| c.contains("$skiptoken=")),
        "a mid-round cursor was stored"
    );
    c.nodes[old].child.kill().unwrap(); // SIGKILL
    c.nodes[old].child.wait().unwrap();
    let (_, took) = leader(&c, Some(old)).await;
    assert!(
        took < Duration::from_secs(6),
        "takeover after a 3 s lease took {took:?}"
    );
    eprintln!("leader failover (kill -9): {took:?}");
    let new = (0..c.nodes.len()).find(|i| *i != old).unwrap();
    let status: serde_json::Value = client()
        .get(format!("http://{}/api/v1/sync/status", c.nodes[new].admin))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&status["leader"]["node"], &status["this_node"]),
        (&json!(format!("node-{new}")), &json!(format!("node-{new}"))),
        "the survivor reports itself as the leader: {status}"
    );
    poll_until("the new leader finished the round", Duration::from_secs(40), || async {
        match progress(&c.store).await {
            (6004, Some(cursor)) if cursor.contains("$deltatoken=") => Ok(()),
            (n, cursor) => {
                assert!(
                    n >= before && n <= 6004,
                    "nothing lost, nothing doubled ({before} -> {n})"
                );
                Err(format!("{n} devices, cursor {cursor:?}"))
            }
        }
    })
    .await;
}

/// A Send Update job started on one node is reported by the other: jobs live in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_on_one_node_is_reported_by_the_other() {
    use portcullis::emulator::jamf::{JAMF_CLIENT_ID, JAMF_CLIENT_SECRET};
    let jamf = format!(
        "[jamf]\nurl = \"{{emulator}}\"\nclient_id = \"{JAMF_CLIENT_ID}\"\nclient_secret = \"{JAMF_CLIENT_SECRET}\"\n"
    );
    let sync =
        "interval = \"1s\"\nlease_ttl = \"3s\"\nintune = false\nshare = { extensionAttribute10 = \"jamf:{managed}\" }";
    let c = Cluster::launch(2, "1s", sync, &jamf, false).await;
    // Computer 101 (alice's Mac) comes from the leader's first Jamf run.
    poll_until("computer 101 synced", Duration::from_secs(15), || async {
        match c.store.computer("101").await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let r = client()
        .post(format!(
            "http://{}/api/v1/conditional-access/send-update",
            c.nodes[1].admin
        ))
        .bearer_auth(ADMIN)
        .json(&json!({ "computer": "101" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", c.nodes[1].logs());
    let job = r.json::<serde_json::Value>().await.unwrap()["job"]
        .as_str()
        .unwrap()
        .to_string();
    let get = |i: usize| {
        let (c, job) = (&c, &job);
        async move {
            let r = client()
                .get(format!("http://{}/api/v1/jobs/{job}", c.nodes[i].admin))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "node {i} knows job {job}");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let (done, _) = poll_until(
        "node 0 reports node 1's job finished",
        Duration::from_secs(15),
        || async {
            let j = get(0).await;
            if j["status"] == "running" {
                Err(j.to_string())
            } else {
                Ok(j)
            }
        },
    )
    .await;
    assert_eq!(
        (
            &done["status"],
            &done["node"],
            &done["computer"],
            &done["result"]["sent"]
        ),
        (&json!("succeeded"), &json!("node-1"), &json!("101"), &json!(1)),
        "{done}"
    );
    assert_eq!(get(1).await, done, "both nodes report the same job");
}

/// A TCP relay in front of PostgreSQL that the test can cut (the database "goes away":
/// every connection is dropped and new ones are refused) and restore on the same port, or
/// freeze (a black-holed network: connections stay open and new ones are accepted, but nothing
/// is answered) and thaw.
struct Relay {
    addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let frozen = tokio::sync::watch::Sender::new(false);
        Self {
            addr,
            target,
            task: Some(tokio::spawn(Self::serve(l, target, frozen.subscribe()))),
            frozen,
        }
    }

    async fn serve(
        l: tokio::net::TcpListener,
        target: std::net::SocketAddr,
        frozen: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut client, _)) = l.accept().await {
            let mut frozen = frozen.clone();
            conns.spawn(async move {
                // Frozen: hold what is open, answer nothing; thawed, the half-done exchanges
                // are dropped (as a network that came back after TCP gave up).
                let now_frozen = *frozen.borrow();
                if now_frozen {
                    let _ = frozen.wait_for(|f| !*f).await.map(|_| ());
                    return;
                }
                let Ok(mut db) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let mut on_freeze = frozen.clone();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut db) => {}
                    _ = async { on_freeze.wait_for(|f| *f).await.map(|_| ()) } => {
                        let _ = frozen.wait_for(|f| !*f).await.map(|_| ());
                    }
                }
            });
        }
    }

    /// The database is away: connections dropped, the port closed.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// The database is back, on the same address.
    async fn restore(&mut self) {
        let l = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(Self::serve(l, self.target, self.frozen.subscribe())));
    }

    /// The network to the database black-holes.
    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// PostgreSQL goes away: connections reset, the port refuses.
    Down,
    /// The network black-holes: nothing answers, nothing is refused.
    BlackHole,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_reported_survived_and_recovered_from() {
    outage(Outage::Down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_is_survived_without_a_hung_request() {
    outage(Outage::BlackHole).await;
}

async fn outage(kind: Outage) {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let (settings, schema) = testing::fresh_schema().await.expect("PostgreSQL for the tests");
    let store = PgStore::open(&settings).await.unwrap();
    portcullis::demo::seed(&store, now()).await.unwrap();
    let base = url::Url::parse(&testing::url()).unwrap();
    let target: std::net::SocketAddr = format!("{}:{}", base.host_str().unwrap(), base.port().unwrap_or(5432))
        .parse()
        .unwrap();
    let mut relay = Relay::start(target).await;
    let mut via = base.clone();
    via.set_port(Some(relay.addr.port())).unwrap();
    let url = format!(
        "{via}{}options=-c%20search_path%3D{schema}",
        if via.query().is_some() { "&" } else { "?" }
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, ADMIN.as_bytes());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let body = format!(
        "{}{}\n[store]\nurl = \"{url}\"\nconnect_timeout = \"1s\"\nquery_timeout = \"3s\"\n[device]\nposture_cache_ttl = \"1s\"\n[sync]\nenabled = false\n\n[[routes]]\nupstream = \"app\"\n",
        emu.entra_section(""),
        pool("app", &[app.addr], ""),
    );
    let gw = Gateway::start_env(&body, &[("PORTCULLIS__ADMIN__TOKEN_SHA256", hash)]).await;
    let status = |persona: &'static str| {
        let (gw, emu) = (&gw, &emu);
        async move {
            let r = client()
                .get(gw.url("/"))
                .bearer_auth(emu.token(&format!("persona={persona}")).await)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (code, body["reason"].as_str().unwrap_or_default().to_string())
        }
    };
    let ready = || async {
        let r = client()
            .get(format!("http://{}/readyz", gw.admin))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["store"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(ready().await, "ok");
    assert_eq!(status("alice").await.0, 200, "alice's posture is now cached");

    match kind {
        Outage::Down => relay.cut(),
        Outage::BlackHole => {
            // A statement in flight when the network goes (sqlx bounds only taking a
            // connection): a save waits on a row lock the test holds, the network black-holes,
            // the lock is let go, and the answer never comes back. The call must fail at
            // store.query_timeout, not when TCP gives up minutes later.
            let api = format!("http://{}/api/v1/conditional-access", gw.admin);
            let r = client().get(&api).bearer_auth(ADMIN).send().await.unwrap();
            let etag = r.headers()["etag"].to_str().unwrap().to_string();
            let doc: serde_json::Value = r.json().await.unwrap();
            let mut lock = store.pool().begin().await.unwrap();
            sqlx::query("SELECT 1 FROM settings FOR UPDATE")
                .execute(&mut *lock)
                .await
                .unwrap();
            let started = std::time::Instant::now();
            let put = tokio::spawn(
                client()
                    .put(&api)
                    .bearer_auth(ADMIN)
                    .header("if-match", etag)
                    .json(&json!({
                        "enabled": false, "connection_type": "manual", "national_cloud": "global",
                        "tenant_id": doc["tenant_id"], "application_id": doc["application_id"],
                        "landing": { "kind": "access_denied" },
                    }))
                    .send(),
            );
            poll_until("the save waiting on the lock", Duration::from_secs(5), || async {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND query LIKE '%FROM settings WHERE key%'",
                )
                .fetch_one(store.pool())
                .await
                .unwrap();
                if waiting > 0 {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            })
            .await;
            relay.freeze();
            lock.commit().await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(30), put)
                .await
                .expect("the save hung on a black-holed statement")
                .unwrap()
                .unwrap();
            assert_eq!(r.status(), 503, "{}", gw.logs());
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "the save waited {:?} (query_timeout 3 s)",
                started.elapsed()
            );
        }
    }
    poll_until("the outage reported", Duration::from_secs(5), || async {
        match ready().await.as_str() {
            "unavailable" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    assert!(gw.metrics().await.contains("portcullis_store_up 0"));
    assert_eq!(
        status("alice").await.0,
        200,
        "a cached posture keeps serving through the outage"
    );
    // Past its 1 s freshness too: the re-read fails, the last known posture is served.
    let cut = std::time::Instant::now();
    poll_until(
        "alice served past her posture's freshness",
        Duration::from_secs(5),
        || async {
            let (code, reason) = status("alice").await;
            assert_eq!(code, 200, "the last known posture is served, not {reason}");
            if cut.elapsed() > Duration::from_millis(1500) {
                Ok(())
            } else {
                Err("within the freshness still".into())
            }
        },
    )
    .await;
    let started = std::time::Instant::now();
    let (code, reason) = status("erin").await;
    assert_eq!(
        (code, reason.as_str()),
        (403, "posture_unavailable"),
        "an uncached device fails closed, and not with a 5xx"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no request waits on the store: {:?}",
        started.elapsed()
    );
    // An admin write: 503 with a retry hint, not a hang.
    let api = format!("http://{}/api/v1/conditional-access", gw.admin);
    let r = client().get(&api).bearer_auth(ADMIN).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let doc: serde_json::Value = r.json().await.unwrap();
    let started = std::time::Instant::now();
    let r = client()
        .put(&api)
        .bearer_auth(ADMIN)
        .header("if-match", etag)
        .json(&json!({
            "enabled": false, "connection_type": "manual", "national_cloud": "global",
            "tenant_id": doc["tenant_id"], "application_id": doc["application_id"],
            "landing": { "kind": "access_denied" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{kind:?}: {}", gw.logs());
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{kind:?}: the write waited {:?} (query_timeout 3 s)",
        started.elapsed()
    );
    // Reads of the API too: 503 with the hint, within the query timeout.
    let started = std::time::Instant::now();
    let r = client()
        .get(format!("http://{}/api/v1/jobs/some-job", gw.admin))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers().contains_key("retry-after")),
        (503, true),
        "{kind:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{kind:?}: {:?}",
        started.elapsed()
    );

    // A change the node cannot see: written while its path to the database is away (another
    // node's sync would write it the same way).
    store.upsert_entra_devices(&[alice(false)]).await.unwrap();
    assert_eq!(status("alice").await.0, 200, "still the last known posture");

    match kind {
        Outage::Down => relay.restore().await,
        Outage::BlackHole => relay.thaw(),
    }
    poll_until("the store back", Duration::from_secs(15), || async {
        match ready().await.as_str() {
            "ok" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    poll_until("erin served again", Duration::from_secs(10), || async {
        match status("erin").await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    poll_until("the missed change enforced", Duration::from_secs(10), || async {
        match status("alice").await {
            (403, reason) if reason == "device_noncompliant" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// A session whose tokens are due on every use (60 s ID tokens, renewal starts two minutes
/// before expiry), used by one browser on two nodes at once: each renewal happens once, so the
/// rotated refresh token is never used twice (the emulator, like Entra, refuses a spent one,
/// and that would sign the user out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_on_two_nodes_renew_a_session_once() {
    use std::sync::atomic::Ordering;
    let c = Cluster::start_tls(2).await;
    c.emu.state.token_lifetime.store(60, Ordering::Relaxed);
    let ca = c.certs.as_ref().unwrap().path().join("ca.pem");
    let a = Browser::new(&ca, c.tls_ports[0]);
    assert_eq!(a.sign_in("/hello", "alice").await.status(), 200);
    let b = a.on_port(c.tls_ports[1]);
    let (ua, ub) = (format!("{}/hello", a.base), format!("{}/hello", b.base));
    for round in 0..8 {
        let (ra, rb, ra2, rb2) = tokio::join!(a.navigate(&ua), b.navigate(&ub), a.navigate(&ua), b.navigate(&ub));
        for (who, r) in [("node 0", ra), ("node 1", rb), ("node 0", ra2), ("node 1", rb2)] {
            assert_eq!(
                r.status(),
                200,
                "round {round}, {who}: signed out? {:?}",
                r.headers().get("location")
            );
        }
    }
    assert!(
        c.emu.state.refresh_grants.load(Ordering::Relaxed) >= 1,
        "the session was renewed"
    );
}
