//! Entra ID identity through the real gateway against the emulator: bearer tokens (good and
//! every kind of bad), signing-key rotation and JWKS outages, browser sign-in end to end with
//! its refusals, sign-out, and groups with overage.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis::emulator::personas::{self, CONSUMER_TENANT_FOR_TESTS};
use serde_json::json;

use crate::harness::{client, echo, free_port, make_certs, pool, Emulator, Gateway, Upstream};
use crate::tls::tls_listener;

/// A gateway with Entra configured, one authenticated route to the app (optionally limited to
/// groups), and an open `/public` route.
async fn gateway(emu: &Emulator, app: &Upstream, entra_extra: &str, groups: &str) -> Gateway {
    let body = format!(
        "{}{}
[[routes]]
name = \"app\"
upstream = \"app\"
require = \"authenticated\"
{groups}

[[routes]]
name = \"public\"
path_prefix = \"/public\"
upstream = \"app\"
require = \"none\"
",
        emu.entra_section(entra_extra),
        pool("app", &[app.addr], "")
    );
    Gateway::start(&body).await
}

async fn get_with(gw: &Gateway, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut r = client().get(gw.url(path));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_bearer_tokens_pass_with_identity_headers() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app, "", "").await;
    let v2 = emu.token("persona=alice").await;
    let e = echo(get_with(&gw, "/x", Some(&format!("Bearer {v2}"))).await).await;
    let h = &e["headers"];
    assert_eq!(h["x-portcullis-user"], json!(["alice@contoso.test"]));
    assert_eq!(
        h["x-portcullis-user-id"],
        json!(["a1000000-0000-4000-8000-000000000001"])
    );
    assert_eq!(h["x-portcullis-tenant"], json!([personas::TENANT_ID]));
    // v1 token with the App ID URI as audience.
    let v1 = emu
        .token(&format!("persona=bob&ver=1&aud={}", personas::GATEWAY_APP_ID_URI))
        .await;
    let e = echo(get_with(&gw, "/x", Some(&format!("bearer {v1}"))).await).await;
    assert_eq!(e["headers"]["x-portcullis-user"], json!(["bob@contoso.test"]));
    // Client-sent identity headers never reach the app, even with a valid token.
    let r = client()
        .get(gw.url("/x"))
        .header("authorization", format!("Bearer {v2}"))
        .header("x-portcullis-user", "mallory@evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        echo(r).await["headers"]["x-portcullis-user"],
        json!(["alice@contoso.test"])
    );
    // Open routes need nothing.
    assert_eq!(get_with(&gw, "/public", None).await.status(), 200);
    let logs = gw.logs();
    assert!(logs.contains("route is open"), "open routes are logged at start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_never_5xx() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app, "", "").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = emu.token("persona=alice").await;
    let (header, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();

    // The emulator's public key, used as an HMAC secret (the classic RS256 → HS256 confusion).
    let jwks: serde_json::Value = client()
        .get(format!("{}/{}/discovery/v2.0/keys", emu.url, personas::TENANT_ID))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let n = jwks["keys"][0]["n"].as_str().unwrap().to_string();
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let hs = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(n.as_bytes())).unwrap()
    };
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#))
    );
    let other_key = {
        let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let enc = jsonwebtoken::EncodingKey::from_rsa_der(k.to_pkcs1_der().unwrap().as_bytes());
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, &claims, &enc).unwrap()
    };
    let mut tampered_claims = claims.clone();
    tampered_claims["oid"] = json!("a1000000-0000-4000-8000-00000000beef");
    let tampered = format!("{header}.{}.{sig}", URL_SAFE_NO_PAD.encode(tampered_claims.to_string()));
    let v2_issuer = format!("{}/{}/v2.0", emu.url, personas::TENANT_ID);
    // An app-only token for the gateway's own audience (client credentials): valid, but no user.
    let app_only = emu
        .app_token(&format!("{}/.default", personas::GATEWAY_CLIENT_ID))
        .await;

    let cases: Vec<(&str, Option<String>)> = vec![
        ("app-only token (no scp)", Some(format!("Bearer {app_only}"))),
        ("missing", None),
        ("empty", Some("Bearer ".into())),
        ("not three parts", Some("Bearer abc.def".into())),
        ("bad base64", Some("Bearer !!!.@@@.###".into())),
        (
            "bad json",
            Some(format!(
                "Bearer {}.{}.{sig}",
                URL_SAFE_NO_PAD.encode("{"),
                URL_SAFE_NO_PAD.encode("[")
            )),
        ),
        ("alg none", Some(format!("Bearer {none}"))),
        ("hs256 with the public key as secret", Some(format!("Bearer {hs}"))),
        (
            "unknown kid",
            Some(format!("Bearer {}", emu.token("persona=alice&kid=no-such-key").await)),
        ),
        ("valid signature from another key", Some(format!("Bearer {other_key}"))),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                emu.token(&format!("persona=alice&exp={}", now - 600)).await
            )),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                emu.token(&format!("persona=alice&nbf={}", now + 600)).await
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                emu.token("persona=alice&aud=api://someone-else").await
            )),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                emu.token("persona=alice&iss=https://evil.test/x/v2.0").await
            )),
        ),
        (
            "v1 token with a v2 issuer",
            Some(format!(
                "Bearer {}",
                emu.token(&format!("persona=alice&ver=1&iss={v2_issuer}")).await
            )),
        ),
        (
            "tenant not allowed",
            Some(format!(
                "Bearer {}",
                emu.token("persona=alice&tid=99999999-2222-3333-4444-555555555555")
                    .await
            )),
        ),
        (
            "consumer tenant",
            Some(format!(
                "Bearer {}",
                emu.token(&format!("persona=alice&tid={CONSUMER_TENANT_FOR_TESTS}"))
                    .await
            )),
        ),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("64 KB token", Some(format!("Bearer {}", "a".repeat(64 * 1024)))),
    ];
    for (name, auth) in &cases {
        let r = get_with(&gw, "/x", auth.as_deref()).await;
        assert_eq!(r.status(), 401, "{name}");
        let www = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(www.starts_with("Bearer"), "{name}: {www}");
        if auth.is_some() && *name != "empty" {
            assert!(www.contains("invalid_token"), "{name}: {www}");
        }
        let p: serde_json::Value = r.json().await.unwrap();
        assert!(
            ["unauthenticated", "token_invalid"].contains(&p["reason"].as_str().unwrap()),
            "{name}: {p}"
        );
    }
    // A token in the query string is never accepted.
    let r = client()
        .get(gw.url(&format!("/x?access_token={good}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The good token still works after all that.
    assert_eq!(get_with(&gw, "/x", Some(&format!("Bearer {good}"))).await.status(), 200);
    let logs = gw.logs();
    assert!(!logs.contains(&good[..40]), "tokens must never be logged");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_without_failures_and_unknown_kid_flood_is_rate_limited() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app, "", "").await;
    assert_eq!(emu.jwks_fetches().await, 1, "keys are fetched once at start");
    let old = emu.token("persona=alice").await;
    assert_eq!(get_with(&gw, "/x", Some(&format!("Bearer {old}"))).await.status(), 200);

    let rotated: serde_json::Value = client()
        .post(format!("{}/_emulator/keys/rotate", emu.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new = emu.token("persona=alice").await;
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(new.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["kid"], rotated["kid"], "new tokens are signed with the new key");
    // The first request with the new key refreshes the keys once; nothing fails meanwhile.
    let (new_auth, old_auth) = (format!("Bearer {new}"), format!("Bearer {old}"));
    let (a, b) = tokio::join!(
        get_with(&gw, "/x", Some(&new_auth)),
        get_with(&gw, "/x", Some(&old_auth))
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(emu.jwks_fetches().await, 2);

    // A flood of unknown key ids causes no further fetch within 5 minutes.
    let mut flood = Vec::new();
    for i in 0..40 {
        flood.push(emu.token(&format!("persona=alice&kid=bogus-{i}")).await);
    }
    for t in &flood {
        assert_eq!(get_with(&gw, "/x", Some(&format!("Bearer {t}"))).await.status(), 401);
    }
    assert_eq!(
        emu.jwks_fetches().await,
        2,
        "unknown-kid refreshes are limited to one per 5 minutes"
    );
    assert_eq!(get_with(&gw, "/x", Some(&format!("Bearer {new}"))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_outage_at_refresh_keeps_the_old_keys() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app, "jwks_min_refresh_interval = \"1s\"", "").await;
    let good = emu.token("persona=alice").await;
    assert_eq!(get_with(&gw, "/x", Some(&format!("Bearer {good}"))).await.status(), 200);
    emu.fault(json!({ "endpoint": "jwks", "status": 503 })).await;
    let before = emu.jwks_fetches().await;
    let unknown = emu.token("persona=alice&kid=after-outage").await;
    assert_eq!(
        get_with(&gw, "/x", Some(&format!("Bearer {unknown}"))).await.status(),
        401
    );
    assert_eq!(
        emu.jwks_fetches().await,
        before + 1,
        "a refresh was attempted and failed"
    );
    // A fresh token signed with the still-published key validates against the kept keys.
    let fresh = emu.token("persona=bob").await;
    assert_eq!(
        get_with(&gw, "/x", Some(&format!("Bearer {fresh}"))).await.status(),
        200
    );
    assert_eq!(get_with(&gw, "/x", Some(&format!("Bearer {good}"))).await.status(), 200);
    emu.clear_faults().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_navigation_requests_are_never_redirected() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app, "", "").await;
    let c = client();
    let json = "application/problem+json";
    let cases = [
        (c.get(gw.url("/x")).header("accept", "application/json"), json),
        (
            c.get(gw.url("/x"))
                .header("accept", "text/html")
                .header("sec-fetch-mode", "cors"),
            json,
        ),
        (
            c.get(gw.url("/x"))
                .header("accept", "text/html")
                .header("x-requested-with", "XMLHttpRequest"),
            json,
        ),
        // A browser's form POST: never redirected (its body would be lost), but a person is
        // looking, so the refusal is a page.
        (
            c.post(gw.url("/x"))
                .header("accept", "text/html")
                .header("sec-fetch-mode", "navigate")
                .body("a=1"),
            "text/html; charset=utf-8",
        ),
    ];
    for (req, content_type) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("location").is_none());
        assert_eq!(r.headers()["content-type"], content_type);
    }
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(gw.url("/x?y=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "a browser navigation goes to sign in");
    assert!(r.headers()["location"].to_str().unwrap().starts_with(&emu.url));
}

/// Everything a browser does, over HTTPS with a cookie jar.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
}

impl Browser {
    pub fn new(ca: &PathBuf, port: u16) -> Self {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(ca)
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        Self {
            http,
            base: format!("https://localhost:{port}"),
        }
    }

    /// The same browser (client and cookie jar) talking to `https://localhost:{port}`.
    pub fn on_port(&self, port: u16) -> Self {
        Self {
            http: self.http.clone(),
            base: format!("https://localhost:{port}"),
        }
    }

    pub async fn navigate(&self, url: &str) -> reqwest::Response {
        self.http.get(url).header("accept", "text/html").send().await.unwrap()
    }

    /// Gateway → emulator sign-in page → persona → the form_post page; returns the form's
    /// action, code and state (what a browser would post back).
    pub async fn sign_in_until_callback(&self, path: &str, persona: &str) -> (String, String, String) {
        let r = self.navigate(&format!("{}{path}", self.base)).await;
        assert_eq!(r.status(), 302);
        let authorize = r.headers()["location"].to_str().unwrap().to_string();
        let page = self.navigate(&authorize).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains(persona));
        let mut form: Vec<(String, String)> = hidden_inputs(&html);
        form.push(("persona".into(), persona.into()));
        let r = self.http.post(&authorize).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        let action = attr(&html, "action=\"").unwrap();
        let inputs = hidden_inputs(&html);
        let get = |k: &str| inputs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        (action, get("code"), get("state"))
    }

    /// The sign-in as `persona` up to the gateway's answer to Entra's form_post (the callback).
    pub async fn post_callback(&self, path: &str, persona: &str) -> reqwest::Response {
        let (action, code, state) = self.sign_in_until_callback(path, persona).await;
        self.http
            .post(&action)
            .form(&[("code", code), ("state", state)])
            .send()
            .await
            .unwrap()
    }

    /// The whole sign-in as `persona`, starting at `path`: posts the callback (303 See Other)
    /// and follows it back; returns what the gateway then answers for the original URL.
    pub async fn sign_in(&self, path: &str, persona: &str) -> reqwest::Response {
        let r = self.post_callback(path, persona).await;
        assert_eq!(r.status(), 303, "{persona}: back from sign-in");
        let back = r.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(back, path, "{persona}: returned to the original path");
        self.navigate(&format!("{}{back}", self.base)).await
    }
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

fn attr(html: &str, start: &str) -> Option<String> {
    let i = html.find(start)? + start.len();
    let j = html[i..].find('"')? + i;
    Some(unescape(&html[i..j]))
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|frag| {
            let name = attr(frag, "name=\"").or_else(|| {
                let i = frag.find("name=")? + 5;
                Some(frag[i..].split([' ', '>']).next()?.to_string())
            })?;
            let value = attr(frag, "value=\"")?;
            Some((name, value))
        })
        .collect()
}

async fn https_gateway(emu: &Emulator, app: &Upstream) -> (Gateway, PathBuf, u16) {
    https_gateway_with(emu, app, &emu.entra_section("")).await
}

/// [`https_gateway`] with this `[entra]` section.
async fn https_gateway_with(emu: &Emulator, app: &Upstream, entra: &str) -> (Gateway, PathBuf, u16) {
    let port = free_port();
    let mut ca = None;
    let body = format!(
        "{entra}{}\n[[routes]]\nname = \"app\"\nupstream = \"app\"\nrequire = \"authenticated\"\n",
        pool("app", &[app.addr], "")
    );
    let gw = Gateway::start_with(&body, |dir| {
        make_certs(dir, &["localhost"]);
        ca = Some(dir.join("ca.pem"));
        tls_listener(dir, port, &["localhost"])
    })
    .await;
    emu.state.register_redirect(
        personas::GATEWAY_CLIENT_ID,
        &format!("https://localhost:{port}/.portcullis/callback"),
    );
    (gw, ca.unwrap(), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_end_to_end_and_sign_out() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let (gw, ca, port) = https_gateway(&emu, &app).await;
    let b = Browser::new(&ca, port);

    let first = b.navigate(&format!("{}/docs/page?q=1", b.base)).await;
    let set_cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=None", "Max-Age=600"] {
        assert!(set_cookie.contains(attr), "login cookie lacks {attr}: {set_cookie}");
    }
    let authorize = first.headers()["location"].to_str().unwrap().to_string();
    let u = url::Url::parse(&authorize).unwrap();
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["response_mode"], "form_post");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "openid profile offline_access");
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);
    assert_eq!(
        q["redirect_uri"],
        format!("https://localhost:{port}/.portcullis/callback")
    );

    let (action, code, state) = b.sign_in_until_callback("/docs/page?q=1", "alice").await;
    assert_eq!(action, format!("https://localhost:{port}/.portcullis/callback"));
    let r = b
        .http
        .post(&action)
        .form(&[("code", &code), ("state", &state)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    assert_eq!(
        r.headers()["location"],
        "/docs/page?q=1",
        "the original URL is restored"
    );
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-portcullis="))
        .expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "session cookie lacks {attr}: {session}");
    }
    assert!(
        session.len() < 400,
        "session cookie must stay small: {} bytes",
        session.len()
    );

    let r = b.navigate(&format!("{}/docs/page?q=1", b.base)).await;
    let e = echo(r).await;
    assert_eq!(e["headers"]["x-portcullis-user"], json!(["alice@contoso.test"]));
    let cookie_seen = e["headers"]["cookie"].to_string();
    assert!(
        !cookie_seen.contains("__Host-portcullis"),
        "gateway cookies must not reach the app: {cookie_seen}"
    );

    // Sign out. A link (a GET) only shows the Sign out button; the session lives on.
    let sign_out = format!("{}/.portcullis/sign_out", b.base);
    let r = b.navigate(&sign_out).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(r#"<form method="post" action="/.portcullis/sign_out"><button type="submit">Sign out</button>"#),
        "{page}"
    );
    assert_eq!(b.navigate(&format!("{}/docs/page", b.base)).await.status(), 200);
    // An API client's GET: 405 naming POST.
    let r = b.http.get(&sign_out).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["allow"].to_str().unwrap()),
        (405, "POST")
    );
    // Another site's form cannot sign the user out.
    for (name, value) in [("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")] {
        let r = b.http.post(&sign_out).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        assert_eq!(
            b.navigate(&format!("{}/docs/page", b.base)).await.status(),
            200,
            "still signed in"
        );
    }
    // The button's POST: the session ends, its cookie is cleared, and Entra ends its own
    // session and sends the browser back to the signed-out page (registered like the callback).
    let signed_out = format!("https://localhost:{port}/.portcullis/signed_out");
    emu.state.register_redirect(personas::GATEWAY_CLIENT_ID, &signed_out);
    let r = b
        .http
        .post(&sign_out)
        .header("sec-fetch-site", "same-origin")
        .header("origin", &b.base)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let logout = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(logout.path(), format!("/{}/oauth2/v2.0/logout", personas::TENANT_ID));
    let q: std::collections::HashMap<_, _> = logout.query_pairs().into_owned().collect();
    assert_eq!(q["post_logout_redirect_uri"], signed_out);
    assert_eq!(q["client_id"], personas::GATEWAY_CLIENT_ID);
    let r = b.navigate(logout.as_str()).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], signed_out.as_str());
    let r = b.navigate(&signed_out).await;
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains(r#"<a class="action" href="/">Sign in again</a>"#));
    assert_eq!(
        b.navigate(&format!("{}/docs/page", b.base)).await.status(),
        302,
        "signed out"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_state_mismatch_replay_wrong_verifier_and_wrong_nonce() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let (_gw, ca, port) = https_gateway(&emu, &app).await;

    // State mismatch.
    let b = Browser::new(&ca, port);
    let (action, code, _state) = b.sign_in_until_callback("/", "alice").await;
    let r = b
        .http
        .post(&action)
        .form(&[("code", code.as_str()), ("state", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state"));

    // Replayed code: a successful callback, then the same code and login cookie again.
    let b = Browser::new(&ca, port);
    let first = b.navigate(&format!("{}/", b.base)).await;
    let login_cookie = first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let authorize = first.headers()["location"].to_str().unwrap().to_string();
    let html = b.navigate(&authorize).await.text().await.unwrap();
    let mut form = hidden_inputs(&html);
    form.push(("persona".into(), "bob".into()));
    let html = b
        .http
        .post(&authorize)
        .form(&form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let inputs = hidden_inputs(&html);
    let get = |k: &str| inputs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let plain = Browser::new(&ca, port).http; // no cookie jar entries: cookies set by hand
    let post = |cookie: String| {
        plain
            .post(format!("https://localhost:{port}/.portcullis/callback"))
            .header("cookie", cookie)
            .form(&[("code", get("code")), ("state", get("state"))])
            .send()
    };
    assert_eq!(post(login_cookie.clone()).await.unwrap().status(), 303);
    let replay = post(login_cookie).await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(
        replay.text().await.unwrap().contains("54005"),
        "the emulator reports the code as already redeemed"
    );

    // Wrong PKCE verifier: a code obtained for sign-in A, posted with sign-in B's cookie/state.
    let b = Browser::new(&ca, port);
    let (_, code_a, _) = b.sign_in_until_callback("/", "alice").await;
    let (action, _code_b, state_b) = b.sign_in_until_callback("/", "alice").await;
    let r = b
        .http
        .post(&action)
        .form(&[("code", code_a.as_str()), ("state", state_b.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("501481"), "PKCE verifier mismatch");

    // Wrong nonce: a code issued for another nonce (no PKCE), posted with B's cookie and state.
    let b = Browser::new(&ca, port);
    let first = b.navigate(&format!("{}/", b.base)).await;
    let authorize = first.headers()["location"].to_str().unwrap().to_string();
    let u = url::Url::parse(&authorize).unwrap();
    let mut q: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .map(|(k, v)| {
            if k == "nonce" {
                (k, "another-nonce".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let state = q.iter().find(|(k, _)| k == "state").unwrap().1.clone();
    q.push(("persona".into(), "alice".into()));
    let html = b
        .http
        .post(format!("{}://{}{}", u.scheme(), u.authority(), u.path()))
        .form(&q)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let code = hidden_inputs(&html).into_iter().find(|(k, _)| k == "code").unwrap().1;
    let r = b
        .http
        .post(format!("https://localhost:{port}/.portcullis/callback"))
        .form(&[("code", code.as_str()), ("state", state.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("nonce"));

    // No login cookie at all.
    let r = Browser::new(&ca, port)
        .http
        .post(format!("https://localhost:{port}/.portcullis/callback"))
        .form(&[("code", "x"), ("state", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_with_overage_resolved_through_graph() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(
        &emu,
        &app,
        "",
        &format!("groups_any = [\"{}\"]", personas::GROUP_ENGINEERING),
    )
    .await;
    let olivia = emu.token("persona=olivia").await;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(olivia.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert!(
        claims.get("groups").is_none() && claims.get("_claim_names").is_some(),
        "olivia's token is an overage token"
    );

    // Graph failing: an explicit groups_unresolved, not an allow and not an empty list.
    emu.fault(json!({ "endpoint": "graph", "status": 500 })).await;
    let r = get_with(&gw, "/x", Some(&format!("Bearer {olivia}"))).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["reason"],
        "groups_unresolved"
    );
    emu.clear_faults().await;

    // Graph back: olivia's 250 groups include Engineering.
    let r = get_with(&gw, "/x", Some(&format!("Bearer {olivia}"))).await;
    assert_eq!(r.status(), 200);
    // alice is in the group through her token; bob is not.
    assert_eq!(
        get_with(&gw, "/x", Some(&format!("Bearer {}", emu.token("persona=alice").await)))
            .await
            .status(),
        200
    );
    let r = get_with(&gw, "/x", Some(&format!("Bearer {}", emu.token("persona=bob").await))).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["reason"], "group_denied");
}

/// The gateway does not reuse a connection whose request body was left unread; this guards that
/// property, which every early answer (401, 302, 403) relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answer_to_a_request_with_a_body_does_not_corrupt_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app, "", "").await;
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\nGET /x HTTP")
        .await
        .unwrap();
    s.write_all(b"GET /public HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway must close the connection, not hang");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        !text.contains("HTTP/1.1 400"),
        "the unread body was parsed as a request: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_renew_with_the_refresh_token_and_a_failed_renewal_signs_in_again() {
    use std::sync::atomic::Ordering;
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let (_gw, ca, port) = https_gateway(&emu, &app).await;
    // ID tokens that expire within the renewal margin: every use renews the session.
    emu.state.token_lifetime.store(60, Ordering::Relaxed);
    let b = Browser::new(&ca, port);
    assert_eq!(b.post_callback("/", "erin").await.status(), 303);
    assert_eq!(emu.state.refresh_grants.load(Ordering::Relaxed), 0);
    let e = echo(b.navigate(&format!("{}/", b.base)).await).await;
    assert_eq!(e["headers"]["x-portcullis-user"], json!(["erin@contoso.test"]));
    assert_eq!(
        emu.state.refresh_grants.load(Ordering::Relaxed),
        1,
        "the session was renewed"
    );
    // The token endpoint failing: the renewal fails and the browser is sent to sign in.
    emu.fault(json!({ "endpoint": "token", "status": 500 })).await;
    let r = b.navigate(&format!("{}/", b.base)).await;
    assert_eq!(r.status(), 302);
    emu.clear_faults().await;
}

/// An RSA certificate and PKCS#8 key in `dir` (the app credential of the certificate kind).
fn app_certificate(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, String) {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let kp = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("{name}.portcullis.test")])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, pem).unwrap();
    (c, k, cert.pem())
}

async fn sign_in_outcome(emu: &Emulator, app: &Upstream, credential: &str) -> (u16, String) {
    use portcullis::emulator::personas::*;
    let port = free_port();
    let mut ca = None;
    let body = format!(
        "[entra]\ntenant_id = \"{TENANT_ID}\"\nclient_id = \"{GATEWAY_CLIENT_ID}\"\nauthority_url = \"{0}\"\ngraph_url = \"{0}\"\n{credential}\n\n{1}\n[[routes]]\nupstream = \"app\"\nrequire = \"authenticated\"\n",
        emu.url,
        pool("app", &[app.addr], "")
    );
    let _gw = Gateway::start_with(&body, |dir| {
        make_certs(dir, &["localhost"]);
        ca = Some(dir.join("ca.pem"));
        tls_listener(dir, port, &["localhost"])
    })
    .await;
    emu.state.register_redirect(
        GATEWAY_CLIENT_ID,
        &format!("https://localhost:{port}/.portcullis/callback"),
    );
    let b = Browser::new(&ca.unwrap(), port);
    let r = b.post_callback("/", "alice").await;
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_redemption_with_certificate_and_federated_assertions() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = app_certificate(dir.path(), "registered");
    emu.state
        .register_certificate(personas::GATEWAY_CLIENT_ID, &pem)
        .unwrap();
    let cred = format!(
        "client_certificate = \"{}\"\nclient_certificate_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let (status, body) = sign_in_outcome(&emu, &app, &cred).await;
    assert_eq!(status, 303, "certificate assertion accepted: {body}");

    let (cert, key, _) = app_certificate(dir.path(), "unknown");
    let cred = format!(
        "client_certificate = \"{}\"\nclient_certificate_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let (status, body) = sign_in_outcome(&emu, &app, &cred).await;
    assert_eq!(status, 400);
    assert!(body.contains("700027"), "unregistered certificate refused: {body}");

    // Secretless: a platform-issued assertion read from a file.
    let assertion = format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"iss":"https://oidc.cluster.test","sub":"system:serviceaccount:gw:portcullis","aud":"api://AzureADTokenExchange"}"#)
    );
    let file = dir.path().join("federated-token");
    std::fs::write(&file, assertion).unwrap();
    let cred = format!("client_assertion_file = \"{}\"", file.display());
    let (status, body) = sign_in_outcome(&emu, &app, &cred).await;
    assert_eq!(status, 400, "not registered yet: {body}");
    assert!(body.contains("70021"), "{body}");
    assert!(emu.state.register_federated(
        personas::GATEWAY_CLIENT_ID,
        "https://oidc.cluster.test",
        "system:serviceaccount:gw:portcullis"
    ));
    let (status, body) = sign_in_outcome(&emu, &app, &cred).await;
    assert_eq!(status, 303, "federated assertion accepted: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_token_endpoint_answers_errors_in_entra_shape() {
    use portcullis::emulator::personas::*;
    let emu = Emulator::start().await;
    let post = |tenant: &str, form: Vec<(&'static str, String)>| {
        client()
            .post(format!("{}/{tenant}/oauth2/v2.0/token", emu.url))
            .form(&form)
            .send()
    };
    let cc = |id: &str, secret: &str| {
        vec![
            ("client_id", id.to_string()),
            ("client_secret", secret.to_string()),
            ("grant_type", "client_credentials".to_string()),
            ("scope", "https://graph.microsoft.com/.default".to_string()),
        ]
    };
    let cases = [
        (
            TENANT_ID,
            cc(GATEWAY_CLIENT_ID, "wrong"),
            401,
            "invalid_client",
            7000215,
        ),
        (
            TENANT_ID,
            cc("00000000-0000-0000-0000-0000000000ff", "x"),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            "no-such-tenant.test",
            cc(GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET),
            400,
            "invalid_request",
            90002,
        ),
        (TENANT_ID, cc(GATEWAY_CLIENT_ID, ""), 401, "invalid_client", 7000218),
    ];
    for (tenant, form, status, error, code) in cases {
        let r = post(tenant, form).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{code}");
        let b: serde_json::Value = r.json().await.unwrap();
        assert_eq!(b["error"], error);
        assert_eq!(b["error_codes"][0], code);
        assert!(b["error_description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("AADSTS{code}:")));
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(b.get(field).is_some(), "{field} missing");
        }
    }
    let ok = post(TENANT_ID, cc(GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let b: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(b["token_type"], "Bearer");
    assert!(
        b.get("refresh_token").is_none(),
        "client credentials never return a refresh token"
    );

    // A user's tokens carry client_info when asked (MSAL always asks): base64url JSON of the
    // user's object id and tenant id.
    let redirect = "https://localhost:1/.portcullis/callback";
    emu.state.register_redirect(GATEWAY_CLIENT_ID, redirect);
    let authorize = format!(
        "{}/{TENANT_ID}/oauth2/v2.0/authorize?client_id={GATEWAY_CLIENT_ID}&response_type=code\
         &response_mode=form_post&scope=openid&state=s1&nonce=n1&redirect_uri={redirect}",
        emu.url
    );
    let page = client().get(&authorize).send().await.unwrap().text().await.unwrap();
    let mut form = hidden_inputs(&page);
    form.push(("persona".into(), "alice".into()));
    let posted = client()
        .post(&authorize)
        .form(&form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let code = hidden_inputs(&posted)
        .into_iter()
        .find(|(n, _)| n == "code")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{posted}"));
    let redeem = |code: String, client_info: Option<&'static str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("client_id", GATEWAY_CLIENT_ID.to_string()),
            ("client_secret", GATEWAY_CLIENT_SECRET.to_string()),
            ("code", code),
            ("redirect_uri", redirect.to_string()),
        ];
        if let Some(v) = client_info {
            form.push(("client_info", v.to_string()));
        }
        post(TENANT_ID, form)
    };
    let t: serde_json::Value = redeem(code, Some("1")).await.unwrap().json().await.unwrap();
    let info = URL_SAFE_NO_PAD
        .decode(t["client_info"].as_str().unwrap_or_else(|| panic!("{t}")))
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(
        info,
        json!({ "uid": find("alice").unwrap().object_id, "utid": TENANT_ID })
    );
    // Not asked for: not sent (the refresh grant behaves the same).
    let r: serde_json::Value = post(
        TENANT_ID,
        vec![
            ("grant_type", "refresh_token".to_string()),
            ("client_id", GATEWAY_CLIENT_ID.to_string()),
            ("client_secret", GATEWAY_CLIENT_SECRET.to_string()),
            ("refresh_token", t["refresh_token"].as_str().unwrap().to_string()),
        ],
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(r["access_token"].is_string() && r.get("client_info").is_none(), "{r}");
}

/// A WebSocket opened with a browser session ends with the session: signing out closes it
/// with 1008 `session_ended` within the session check (a second) and a second more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_ends_with_its_browser_session() {
    use futures_util::{SinkExt, StreamExt};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let (gw, ca, port) = https_gateway(&emu, &app).await;
    let b = Browser::new(&ca, port);
    let r = b.post_callback("/", "alice").await;
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-portcullis="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    // The same session's cookie on the gateway's plain listener (as behind a TLS front).
    let mut req = format!("ws://{}/ws", gw.http).into_client_request().unwrap();
    req.headers_mut().insert("cookie", session.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the session opens a WebSocket");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "hello");

    let r = b
        .http
        .post(format!("{}/.portcullis/sign_out", b.base))
        .header("sec-fetch-site", "same-origin")
        .header("origin", &b.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16() / 100, 3, "signed out");
    let signed_out = std::time::Instant::now();
    let close = crate::harness::close_frame(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "session_ended");
    assert!(
        signed_out.elapsed() < Duration::from_secs(2),
        "took {:?}",
        signed_out.elapsed()
    );
    // The line is written after the cut, so it may land just after the client saw the close.
    crate::harness::poll_until("the cut in the log", Duration::from_secs(2), || async {
        let logs = gw.logs();
        if logs.contains("open connections cut: their browser session ended") {
            Ok(())
        } else {
            Err(logs.lines().last().unwrap_or_default().to_string())
        }
    })
    .await;
}

/// SIGHUP applies a changed `[entra]`: a tenant added to `allowed_tenants` has its signing keys
/// fetched before the swap (the home tenant's are kept, not fetched again) and its tokens pass;
/// the new client secret is the one sign-in redeems codes with. A bad `[entra]` changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_the_files_entra_identity() {
    use crate::harness::poll_until;
    use portcullis::emulator::personas::*;
    use std::time::Duration;
    const OTHER: &str = PARTNER_TENANT_ID;
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let wrong = emu
        .entra_section("")
        .replace(GATEWAY_CLIENT_SECRET, "a-secret-entra-does-not-know");
    let (gw, ca, port) = https_gateway_with(&emu, &app, &wrong).await;
    let b = Browser::new(&ca, port);
    let bearer = |token: String| {
        let r = b
            .http
            .get(format!("{}/x", b.base))
            .header("authorization", format!("Bearer {token}"));
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let (home, other) = (
        emu.token("persona=alice").await,
        emu.token(&format!("persona=alice&tid={OTHER}&iss={}/{OTHER}/v2.0", emu.url))
            .await,
    );
    assert_eq!(bearer(home.clone()).await, 200);
    assert_eq!(bearer(other.clone()).await, 401, "a tenant not allowed yet");
    // Entra refuses the code redemption with the wrong secret: no session.
    let r = b.post_callback("/x", "alice").await;
    assert_ne!(r.status(), 303, "signed in with a secret Entra does not know");

    let config = gw.log.parent().unwrap().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let reloads = |logs: &str| logs.matches("configuration reloaded").count();
    // A bad [entra] first: refused with its key, nothing changes.
    let bad = text.replace(
        &format!("tenant_id = \"{TENANT_ID}\""),
        &format!("tenant_id = \"{TENANT_ID}\"\nallowed_tenants = [\"not-a-tenant\"]"),
    );
    assert_ne!(bad, text);
    std::fs::write(&config, &bad).unwrap();
    gw.signal("HUP");
    poll_until("the bad [entra] refused", Duration::from_secs(10), || async {
        let logs = gw.logs();
        if logs.contains("reload refused") && logs.contains("entra.allowed_tenants[0]") {
            Ok(())
        } else {
            Err(logs.lines().last().unwrap_or_default().to_string())
        }
    })
    .await;
    assert_eq!(bearer(other.clone()).await, 401);

    let good = text
        .replace("a-secret-entra-does-not-know", GATEWAY_CLIENT_SECRET)
        .replace(
            &format!("tenant_id = \"{TENANT_ID}\""),
            &format!("tenant_id = \"{TENANT_ID}\"\nallowed_tenants = [\"{OTHER}\"]"),
        );
    let fetches = emu.jwks_fetches().await;
    std::fs::write(&config, &good).unwrap();
    gw.signal("HUP");
    poll_until("the new [entra] in force", Duration::from_secs(10), || async {
        let logs = gw.logs();
        if reloads(&logs) == 1 {
            Ok(())
        } else {
            Err(logs.lines().last().unwrap_or_default().to_string())
        }
    })
    .await;
    assert_eq!(
        emu.jwks_fetches().await,
        fetches + 1,
        "only the added tenant's keys are fetched, and before the swap: {}",
        gw.logs()
    );
    assert_eq!(bearer(other).await, 200, "the added tenant's token: {}", gw.logs());
    assert_eq!(bearer(home).await, 200, "the home tenant's token");
    // Sign-in redeems the code with the new secret.
    let r = b.sign_in("/x", "alice").await;
    assert_eq!(r.status(), 200);
    // The sync, refused with the old secret, reconnects with the new one; the admin API takes
    // Entra bearer tokens through the new identity.
    emu.state
        .assign_app_role("a1000000-0000-4000-8000-000000000001", "Portcullis.Admin");
    let admin = emu.token("persona=alice").await;
    let api = |path: &str| format!("http://{}{path}", gw.admin);
    let r = client()
        .post(api("/api/v1/sync/entra/run"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    poll_until(
        "an Entra sync run with the new secret",
        Duration::from_secs(10),
        || async {
            let st: serde_json::Value = client()
                .get(api("/api/v1/sync/status"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if st["entra"]["last_success"].is_number() {
                Ok(())
            } else {
                Err(st.to_string())
            }
        },
    )
    .await;
    let logs = gw.logs();
    assert!(!logs.contains("applies only at the next start"), "{logs}");
    assert!(!logs.contains(GATEWAY_CLIENT_SECRET), "the secret is never logged");
    assert!(
        !logs.contains("a-secret-entra-does-not-know"),
        "the secret is never logged"
    );
}
