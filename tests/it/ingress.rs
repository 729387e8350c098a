//! Portcullis as the authorization service of real ingresses from Debian's packages — nginx
//! with `auth_request` and Caddy with `forward_auth` — configured with the snippets the docs
//! give (`contrib/forward-auth/`), in front of the echo app, over TLS: every persona gets the
//! answer the proxy itself gives, the verified identity reaches the app, a browser signs in
//! through the ingress, forged forwarding and identity headers change nothing, and a check
//! from an address that is not the ingress's is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis::emulator::personas;

use crate::enforcement::{config, seeded_store, LANDING};
use crate::harness::{echo, free_port, make_certs, poll_until, Emulator, Gateway, Upstream};
use crate::identity::Browser;

const HOST: &str = "app.test";

const ROUTES: &str = "
[[routes]]
name = \"open-host\"
host = \"open.test\"
upstream = \"app\"
require = \"none\"

[[routes]]
name = \"open\"
path_prefix = \"/open\"
upstream = \"app\"
require = \"none\"

[[routes]]
name = \"app\"
upstream = \"app\"
";

/// An ingress process, killed when dropped.
struct Ingress {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ingress {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client that reaches `app.test` at this ingress and trusts the test CA.
    fn client(&self, dir: &Path, cookies: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .cookie_store(cookies)
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(ca)
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.port)
    }
}

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/forward-auth")
}

/// nginx with the documented snippets: `portcullis-locations.conf` in the server block,
/// `portcullis-protect.conf` in the protected location.
fn nginx(dir: &Path, auth: SocketAddr, app: SocketAddr) -> Child {
    let (port, plain, root) = (free_port(), free_port(), dir.join("nginx"));
    std::fs::create_dir_all(&root).unwrap();
    let snippets = contrib().join("nginx");
    let conf = format!(
        "user root;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
           access_log {root}/access.log;\n\
           client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fastcgi;\n\
           uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;\n\
           upstream portcullis {{ server {auth}; }}\n\
           upstream app {{ server {app}; }}\n\
           server {{\n\
             listen 127.0.0.1:{port} ssl default_server; listen 127.0.0.1:{plain} default_server;\n\
             ssl_certificate {cert}; ssl_certificate_key {key};\n\
             return 421;\n\
           }}\n\
           server {{\n\
             listen 127.0.0.1:{port} ssl; listen 127.0.0.1:{plain};\n\
             server_name {HOST};\n\
             ssl_certificate {cert}; ssl_certificate_key {key};\n\
             include {snippets}/portcullis-locations.conf;\n\
             location / {{\n\
               include {snippets}/portcullis-protect.conf;\n\
               proxy_pass http://app;\n\
             }}\n\
           }}\n\
         }}\n",
        root = root.display(),
        cert = dir.join("app.test.pem").display(),
        key = dir.join("app.test-key.pem").display(),
        snippets = snippets.display(),
    );
    std::fs::write(root.join("nginx.conf"), conf).unwrap();
    std::fs::write(root.join("port"), port.to_string()).unwrap();
    std::fs::write(root.join("plain-port"), plain.to_string()).unwrap();
    // Debian puts nginx in /usr/sbin, which a user's PATH may not hold.
    let bin = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    Command::new(bin)
        .args(["-p"])
        .arg(&root)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("stderr.log")).unwrap())
        .spawn()
        .expect("nginx (apt-get install nginx; scripts/test.sh installs it)")
}

/// Caddy with the documented Caddyfile, its placeholders from the environment.
fn caddy(dir: &Path, auth: SocketAddr, app: SocketAddr) -> Child {
    let (port, root) = (free_port(), dir.join("caddy"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("port"), port.to_string()).unwrap();
    Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(contrib().join("Caddyfile"))
        .env("SITE", format!("{HOST}:{port}"))
        .env("PORTCULLIS_AUTH", auth.to_string())
        .env("APP", app.to_string())
        .env("TLS_CERT", dir.join("app.test.pem"))
        .env("TLS_KEY", dir.join("app.test-key.pem"))
        .env("HTTP_PORT", free_port().to_string())
        .env("HTTPS_PORT", port.to_string())
        // Caddy keeps its state under HOME/XDG_*: the test's directory, not root's.
        .env("HOME", &root)
        .env("XDG_DATA_HOME", &root)
        .env("XDG_CONFIG_HOME", &root)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("stderr.log")).unwrap())
        .spawn()
        .expect("caddy (apt-get install caddy; scripts/test.sh installs it)")
}

async fn ready(name: &'static str, mut child: Child, dir: &Path) -> Ingress {
    let root = dir.join(name);
    let port: u16 = std::fs::read_to_string(root.join("port")).unwrap().parse().unwrap();
    let log = root.join("stderr.log");
    poll_until(&format!("{name} listening"), Duration::from_secs(20), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    Ingress { name, child, port, log }
}

struct Env {
    emu: Emulator,
    _app: Upstream,
    gw: Gateway,
    dir: tempfile::TempDir,
    ingresses: Vec<Ingress>,
    /// The forward-auth listeners: nginx's, Caddy's, Traefik's, Envoy's.
    auth: [SocketAddr; 4],
    _db: tempfile::TempDir,
}

async fn env() -> Env {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("p.db");
    let _store = seeded_store(&path, now()).await;
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[HOST]);
    let auth: [SocketAddr; 4] = [0, 1, 2, 3].map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())));
    let listeners = format!(
        "[[listeners]]\nname = \"nginx-checks\"\naddress = \"{}\"\nforward_auth = {{ ingress = \"nginx\", trusted = [\"127.0.0.1\"] }}\n\n\
         [[listeners]]\nname = \"caddy-checks\"\naddress = \"{}\"\nforward_auth = {{ ingress = \"caddy\", trusted = [\"127.0.0.1/32\"] }}\n\n\
         [[listeners]]\nname = \"traefik-checks\"\naddress = \"{}\"\nforward_auth = {{ ingress = \"traefik\" }}\n\n\
         [[listeners]]\nname = \"envoy-checks\"\naddress = \"{}\"\nforward_auth = {{ ingress = \"envoy\" }}\n",
        auth[0], auth[1], auth[2], auth[3]
    );
    let gw = Gateway::start_with(&config(&emu, &app, &path, LANDING, ROUTES), |_| listeners).await;
    let ingresses = vec![
        ready("nginx", nginx(dir.path(), auth[0], app.addr), dir.path()).await,
        ready("caddy", caddy(dir.path(), auth[1], app.addr), dir.path()).await,
    ];
    for i in &ingresses {
        emu.state.register_redirect(
            personas::GATEWAY_CLIENT_ID,
            &format!("https://{HOST}:{}/.portcullis/callback", i.port),
        );
    }
    Env {
        emu,
        _app: app,
        gw,
        dir,
        ingresses,
        auth,
        _db: db,
    }
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What a client gets for `path` as `persona` (bearer token; a browser navigation when `page`).
async fn get(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    page: bool,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if page {
        r = r.header("accept", "text/html,application/xhtml+xml");
    }
    for (n, v) in extra {
        r = r.header(*n, *v);
    }
    r.send().await.unwrap()
}

/// The parts of an answer that must not depend on the way in: status, type, redirect target
/// and the page's text without the addresses in it.
async fn answer(r: reqwest::Response, here: &str) -> (u16, String, String, String) {
    let header = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, ctype, location) = (r.status().as_u16(), header("content-type"), header("location"));
    let body = r.text().await.unwrap().replace(here, "HERE");
    (status, ctype, location.replace(here, "HERE"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_and_caddy_ask_portcullis_and_every_persona_gets_the_proxys_answer() {
    let e = env().await;
    let direct = no_redirects();
    for ing in &e.ingresses {
        let c = ing.client(e.dir.path(), false);
        let here = format!("{HOST}:{}", ing.port);
        // alice: through to the app, with her verified identity and her Mac's posture; the
        // identity headers she forges are not what the app sees.
        let alice = e.emu.token("persona=alice").await;
        let forged = [
            ("x-portcullis-user", "mallory@contoso.test"),
            ("x-portcullis-grace-ends", "2099-01-01T00:00:00Z"),
            ("cookie", "theme=dark; __Host-portcullis=not-for-the-app; lang=en"),
        ];
        let v = echo(get(&c, &ing.url("/docs?q=1"), Some(&alice), false, &forged).await).await;
        let h = &v["headers"];
        let one = |n: &str| {
            h[n].as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            one("x-portcullis-user"),
            Some(vec!["alice@contoso.test".to_string()]),
            "{}: {v}",
            ing.name
        );
        assert_eq!(
            one("x-portcullis-posture"),
            Some(vec!["compliant".to_string()]),
            "{}: {v}",
            ing.name
        );
        assert_eq!(
            one("x-portcullis-decision"),
            Some(vec!["compliant".to_string()]),
            "{}: {v}",
            ing.name
        );
        assert!(one("x-portcullis-device-id").is_some(), "{}: {v}", ing.name);
        assert!(
            one("x-portcullis-grace-ends").is_none_or(|g| g.iter().all(String::is_empty)),
            "{}: a forged header reached the app: {v}",
            ing.name
        );
        assert_eq!(v["path"], "/docs", "{}: {v}", ing.name);
        // The app gets the client's cookies but never the gateway's own.
        assert_eq!(
            one("cookie"),
            Some(vec!["theme=dark; lang=en".to_string()]),
            "{}: {v}",
            ing.name
        );
        // erin, in her grace period: through, flagged for the app.
        let erin = e.emu.token("persona=erin").await;
        let v = echo(get(&c, &ing.url("/"), Some(&erin), false, &[]).await).await;
        assert_eq!(v["headers"]["x-portcullis-posture"][0], "in_grace", "{}: {v}", ing.name);
        assert!(
            v["headers"]["x-portcullis-grace-ends"][0].is_string(),
            "{}: {v}",
            ing.name
        );

        // Everyone else: the answer the proxy gives, browsers and API clients alike.
        for persona in ["bob", "carol", "dave"] {
            let token = e.emu.token(&format!("persona={persona}")).await;
            for page in [true, false] {
                let via = answer(get(&c, &ing.url("/"), Some(&token), page, &[]).await, &here).await;
                let own = answer(
                    get(&direct, &e.gw.url("/"), Some(&token), page, &[]).await,
                    &e.gw.http.to_string(),
                )
                .await;
                assert!(via.0 >= 300, "{} {persona}: let through", ing.name);
                assert_eq!(via, own, "{} {persona} page={page}: not the proxy's answer", ing.name);
            }
        }
        // No credential: 401 for an API client, the sign-in redirect for a browser.
        let r = get(&c, &ing.url("/"), None, false, &[]).await;
        assert_eq!(r.status(), 401, "{}", ing.name);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let r = get(&c, &ing.url("/"), None, true, &[]).await;
        assert_eq!(r.status(), 302, "{}", ing.name);
        assert!(r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/oauth2/v2.0/authorize"));
        assert!(r.headers()["set-cookie"].to_str().unwrap().contains("-login="));
        // The open route needs nothing.
        assert_eq!(get(&c, &ing.url("/open/x"), None, false, &[]).await.status(), 200);
        // The answer page (ingress-nginx's sign-in URL): dave's landing for the page he
        // asked for, and alice straight back to it.
        let dave = e.emu.token("persona=dave").await;
        let via = answer(
            get(&c, &ing.url("/.portcullis/answer?rd=%2Fdocs"), Some(&dave), true, &[]).await,
            &here,
        )
        .await;
        let own = answer(
            get(&direct, &e.gw.url("/docs"), Some(&dave), true, &[]).await,
            &e.gw.http.to_string(),
        )
        .await;
        assert_eq!(via, own, "{}: dave's answer page", ing.name);
        let r = get(&c, &ing.url("/.portcullis/answer?rd=%2Fdocs"), Some(&alice), true, &[]).await;
        assert_eq!(
            (r.status().as_u16(), r.headers()["location"].to_str().unwrap()),
            (302, "/docs")
        );
    }
    // The decision log names the ingress and shows the request the client made.
    let logs = e.gw.logs();
    for ingress in ["nginx", "caddy"] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("ingress=\"{ingress}\"")) && l.contains("path=\"/docs\""))
            .unwrap_or_else(|| panic!("no decision line for {ingress}: {logs}"));
        assert!(line.contains("outcome=\"allow\""), "{line}");
        assert!(line.contains("user=a1000000-0000-4000-8000-000000000001"), "{line}");
        assert!(line.contains("device_source="), "{line}");
    }
    assert!(!logs.contains("panicked"), "{logs}");
    let m = e.gw.metrics().await;
    let decisions = |reason: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("portcullis_decisions_total")
                    && l.contains("route=\"app\"")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    // alice's request and answer page through each ingress; bob's two requests asked directly (twice), through
    // Caddy, and through nginx, which asks twice for a refusal (its check, then the answer
    // for the user).
    assert_eq!(decisions("compliant"), 2.0 + 2.0, "{m}");
    assert_eq!(decisions("device_noncompliant"), 4.0 + 2.0 + 4.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_through_each_ingress() {
    let e = env().await;
    for ing in &e.ingresses {
        let b = Browser {
            http: ing.client(e.dir.path(), true),
            base: format!("https://{HOST}:{}", ing.port),
        };
        let r = b.sign_in("/docs", "alice").await;
        let v = echo(r).await;
        assert_eq!(
            v["headers"]["x-portcullis-user"][0], "alice@contoso.test",
            "{}: {v}",
            ing.name
        );
        assert_eq!(v["path"], "/docs");
        // The session cookie alone lets the next navigation through.
        let v = echo(b.navigate(&format!("{}/next", b.base)).await).await;
        assert_eq!(
            v["headers"]["x-portcullis-user"][0], "alice@contoso.test",
            "{}: {v}",
            ing.name
        );
        // Only the session cookie was sent: the app gets no cookie at all.
        let cookies = v["headers"]["cookie"].as_array().cloned().unwrap_or_default();
        assert!(
            cookies.iter().all(|c| c.as_str().is_some_and(str::is_empty)),
            "{}: the session cookie reached the app: {v}",
            ing.name
        );
        assert!(!ing.logs().contains("[emerg]"), "{}", ing.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_headers_pick_nothing_and_strangers_get_no_decision() {
    let e = env().await;
    // Through each ingress, a client's own forwarding headers do not move the decision to the
    // open route (or another host): the ingress's own values describe the request.
    for ing in &e.ingresses {
        let c = ing.client(e.dir.path(), false);
        let forged = [
            ("x-original-uri", "/open/x"),
            ("x-forwarded-uri", "/open/x"),
            ("x-original-method", "OPTIONS"),
            ("x-forwarded-host", "other.test"),
            ("x-real-ip", "10.9.9.9"),
        ];
        let r = get(&c, &ing.url("/private"), None, false, &forged).await;
        assert_eq!(r.status(), 401, "{}: a forged header picked the open route", ing.name);
    }
    // A check straight to the forward-auth listener: from the ingress's address it is answered,
    // from any other it is refused without a decision.
    let alice = e.emu.token("persona=alice").await;
    let check = |from: [u8; 4], auth: SocketAddr| {
        let c = reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from(from))
            .build()
            .unwrap();
        c.get(format!("http://{auth}/auth"))
            .bearer_auth(&alice)
            .header("x-original-uri", "/")
            .header("x-original-method", "GET")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/")
            .header("x-forwarded-host", HOST)
            .header("x-forwarded-proto", "https")
            .send()
    };
    for auth in &e.auth[..2] {
        let auth = *auth;
        let r = check([127, 0, 0, 1], auth).await.unwrap();
        assert_eq!(r.status(), 200, "{auth}");
        assert_eq!(r.headers()["x-portcullis-user"], "alice@contoso.test");
        let r = check([127, 0, 0, 3], auth).await.unwrap();
        assert_eq!(r.status(), 403, "{auth}");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["reason"], "untrusted_ingress");
    }
    let logs = e.gw.logs();
    assert!(logs.contains("outside forward_auth.trusted is refused"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// Traefik's ForwardAuth and Envoy's HTTP `ext_authz` check requests, in the shapes their
/// documentation gives (neither runs here): the same answers as the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_and_envoy_checks_in_their_documented_shapes() {
    let e = env().await;
    let (traefik, envoy) = (e.auth[2], e.auth[3]);
    let (direct, c) = (no_redirects(), no_redirects());
    // Traefik: a GET to the address, the original request in X-Forwarded-*, its headers along.
    let traefik_check = |token: Option<String>, page: bool| {
        let mut r = c
            .get(format!("http://{traefik}/verify"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", HOST)
            .header("x-forwarded-uri", "/docs?q=1")
            .header("x-forwarded-for", "203.0.113.9")
            .header("cookie", "theme=dark; __Host-portcullis=not-for-the-app");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if page {
            r = r.header("accept", "text/html,application/xhtml+xml");
        }
        r.send()
    };
    // Envoy (path_prefix /verify): the original method, path and Host.
    let envoy_check = |method: reqwest::Method, token: Option<String>, page: bool| {
        let mut r = c
            .request(method, format!("http://{envoy}/verify/docs?q=1"))
            .header("host", HOST)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-request-id", "9f1c")
            .header("x-envoy-expected-rq-timeout-ms", "2000")
            .header("content-length", "0");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if page {
            r = r.header("accept", "text/html,application/xhtml+xml");
        }
        r.send()
    };
    let alice = e.emu.token("persona=alice").await;
    let r = traefik_check(Some(alice.clone()), false).await.unwrap();
    assert_eq!(r.headers()["cookie"], "theme=dark");
    for r in [
        r,
        envoy_check(reqwest::Method::POST, Some(alice.clone()), false)
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-portcullis-user"], "alice@contoso.test");
        assert_eq!(r.headers()["x-portcullis-posture"], "compliant");
        assert_eq!(r.headers()["x-portcullis-reason"], "compliant");
        // Every identity header is there, empty when it does not apply.
        assert_eq!(r.headers()["x-portcullis-grace-ends"], "");
        // The cookies for the app, under both names, never the gateway's own.
        let sent = r.headers().get("cookie").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            r.headers()["x-portcullis-cookie"].to_str().unwrap(),
            sent.as_deref().unwrap()
        );
    }
    for persona in ["bob", "carol", "dave"] {
        let token = e.emu.token(&format!("persona={persona}")).await;
        for page in [true, false] {
            let own = answer(
                get(&direct, &e.gw.url("/docs?q=1"), Some(&token), page, &[]).await,
                &e.gw.http.to_string(),
            )
            .await;
            let via = answer(traefik_check(Some(token.clone()), page).await.unwrap(), HOST).await;
            assert_eq!(via, own, "traefik {persona} page={page}");
            let via = answer(
                envoy_check(reqwest::Method::GET, Some(token.clone()), page)
                    .await
                    .unwrap(),
                HOST,
            )
            .await;
            assert_eq!(via, own, "envoy {persona} page={page}");
        }
    }
    // No credential: the sign-in for a browser (its callback on the original host), 401 else.
    let r = traefik_check(None, true).await.unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let redirect = url::Url::parse(&location).unwrap();
    let back = redirect
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .to_string();
    assert_eq!(back, format!("https://{HOST}/.portcullis/callback"));
    let r = envoy_check(reqwest::Method::GET, None, false).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let logs = e.gw.logs();
    for ingress in ["traefik", "envoy"] {
        assert!(
            logs.lines().any(|l| l.contains(&format!("ingress=\"{ingress}\""))
                && l.contains("path=\"/docs\"")
                && l.contains("client=203.0.113.9")),
            "{ingress}: {logs}"
        );
    }
}

/// One HTTP/1.1 request written as is (`Connection: close`); the status code of the answer.
async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {text}"))
}

/// nginx routes an absolute-form request by the host in its request line, and one for a name it
/// has no server block for to its default server: Portcullis decides on the host nginx routed
/// by (`$host`), never on a `Host` header that nginx did not route by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_checks_the_host_it_routed_by() {
    let e = env().await;
    let plain: u16 = std::fs::read_to_string(e.dir.path().join("nginx/plain-port"))
        .unwrap()
        .parse()
        .unwrap();
    let nginx = SocketAddr::from(([127, 0, 0, 1], plain));
    // The open host's route is open: through the proxy listener, no credential needed.
    let open = "GET /private HTTP/1.1\r\nHost: open.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(e.gw.http, open).await, 200);
    // Through nginx: the request line names app.test, the Host header the open host.
    let absolute =
        format!("GET http://{HOST}:{plain}/private HTTP/1.1\r\nHost: open.test\r\nConnection: close\r\n\r\n");
    assert_eq!(
        raw_status(nginx, &absolute).await,
        401,
        "decided on the Host header, not nginx's host"
    );
    // A name nginx has no server block for: its default server, never the app.
    assert_eq!(raw_status(nginx, open).await, 421);
    // And the app's own name, as a client normally sends it.
    let normal = format!("GET /private HTTP/1.1\r\nHost: {HOST}:{plain}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(nginx, &normal).await, 401);
    let logs = e.gw.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("ingress=\"nginx\"") && l.contains("path=\"/private\"") && l.contains("route=\"app\"")),
        "{logs}"
    );
}
