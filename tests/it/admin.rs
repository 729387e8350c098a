//! The admin API over real HTTP against a running gateway with SQLite and the emulator.

use std::time::Duration;

use portcullis::emulator::personas;
use serde_json::json;

use crate::harness::{client, poll_until, pool, Emulator, Gateway, Upstream};

const ADMIN: &str = "admin-token-for-tests-0123456789";
const READER: &str = "reader-token-for-tests-0123456789";

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn gateway(emu: &Emulator, app: &Upstream) -> Gateway {
    let body = format!(
        "{}{}\n[sync]\ninterval = \"1s\"\nintune = false\n[session]\ncookie_key = \"YWRtaW4tYXBpLXRlc3RzLXNlc3Npb24ta2V5LTMyYiE=\"\n\n[[routes]]\nupstream = \"app\"\n",
        emu.entra_section(""),
        pool("app", &[app.addr], ""),
    );
    // The harness writes [admin]; the token hashes come as environment overrides, as an
    // operator keeps them out of the file.
    Gateway::start_env(
        &body,
        &[
            ("PORTCULLIS__ADMIN__TOKEN_SHA256", sha256_hex(ADMIN)),
            ("PORTCULLIS__ADMIN__READ_ONLY_TOKEN_SHA256", sha256_hex(READER)),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_api_auth_etags_validation_secrets_and_audit() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app).await;
    let url = |p: &str| format!("http://{}{p}", gw.admin);
    let c = client();

    // Unauthenticated and wrong tokens are refused; the reader cannot write.
    assert_eq!(
        c.get(url("/api/v1/conditional-access")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        c.get(url("/api/v1/conditional-access"))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(url("/api/v1/conditional-access"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["tenant_id"], personas::TENANT_ID);
    assert_eq!(doc["client_secret"]["set"], false);
    let mut body = json!({
        "enabled": true, "connection_type": "manual", "national_cloud": "global",
        "tenant_id": personas::TENANT_ID, "application_id": personas::GATEWAY_CLIENT_ID,
        "client_secret": personas::GATEWAY_CLIENT_SECRET, "landing": { "kind": "access_denied" },
    });
    let put = |token: &'static str, if_match: Option<String>, b: serde_json::Value| {
        let mut r = c.put(url("/api/v1/conditional-access")).bearer_auth(token).json(&b);
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        r.send()
    };
    assert_eq!(
        put(READER, Some(etag.clone()), body.clone()).await.unwrap().status(),
        403
    );
    assert_eq!(put(ADMIN, None, body.clone()).await.unwrap().status(), 428);

    // Invalid values are refused with the field named.
    let mut bad = body.clone();
    bad["tenant_id"] = json!("contoso");
    bad["national_cloud"] = json!("germany");
    let r = put(ADMIN, Some(etag.clone()), bad).await.unwrap();
    assert_eq!(r.status(), 400);
    let p: serde_json::Value = r.json().await.unwrap();
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("tenant_id") && detail.contains("national_cloud"),
        "{detail}"
    );

    // A good save: stored, tested, secret write-only.
    let r = put(ADMIN, Some(etag.clone()), body.clone()).await.unwrap();
    let status = r.status();
    let new_etag = r
        .headers()
        .get("etag")
        .map(|e| e.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", gw.logs());
    let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(saved["test"]["ok"], true, "{saved}");
    assert_eq!(saved["settings"]["client_secret"]["set"], true);
    assert!(!saved.to_string().contains(personas::GATEWAY_CLIENT_SECRET));
    // A stale write (the old ETag) is refused.
    body["enabled"] = json!(false);
    assert_eq!(put(ADMIN, Some(etag), body.clone()).await.unwrap().status(), 412);
    let r = c
        .get(url("/api/v1/conditional-access"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), new_etag);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(personas::GATEWAY_CLIENT_SECRET),
        "a GET never returns the secret"
    );

    // The audit trail has the change, secret masked.
    let audit = |query: &'static str| {
        let (c, url) = (&c, &url);
        async move {
            c.get(url(&format!("/api/v1/audit{query}")))
                .bearer_auth(READER)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let a = audit("").await;
    let entry = &a["items"][0];
    assert_eq!(entry["action"], "conditional_access.update");
    assert_eq!(entry["actor"], "admin-token");
    assert!(entry["detail"].as_str().unwrap().contains("***changed***"));
    assert!(!a.to_string().contains(personas::GATEWAY_CLIENT_SECRET));

    // The admin-consent URL for the cloud, tenant and application.
    let cu: serde_json::Value = c
        .get(url(
            "/api/v1/conditional-access/consent-url?redirect_uri=https://gw.example.com/done",
        ))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let u = url::Url::parse(cu["url"].as_str().unwrap()).unwrap();
    assert_eq!(u.host_str(), Some("login.microsoftonline.com"));
    assert_eq!(u.path(), format!("/{}/v2.0/adminconsent", personas::TENANT_ID));
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], personas::GATEWAY_CLIENT_ID);
    assert_eq!(q["scope"], "https://graph.microsoft.com/.default");
    assert_eq!(q["state"], cu["state"].as_str().unwrap());

    // Run Test and sync status.
    let t: serde_json::Value = c
        .post(url("/api/v1/conditional-access/test"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(
        c.post(url("/api/v1/sync/entra/run"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let (st, _) = poll_until("an Entra sync run reported", Duration::from_secs(10), || async {
        let st: serde_json::Value = c
            .get(url("/api/v1/sync/status"))
            .bearer_auth(READER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if st["entra"]["last_success"].is_number() {
            Ok(st)
        } else {
            Err(st.to_string())
        }
    })
    .await;
    assert!(st["entra"]["lag_seconds"].as_i64().unwrap() < 60, "{st}");
    // Run Test and "sync now" are audited like every other action, newest first.
    let a = audit("?limit=2").await;
    let actions: Vec<(&str, &str, &str)> = a["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default(),
                e["actor"].as_str().unwrap_or_default(),
                e["detail"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("sync_now", "admin-token", r#"{"source":"entra"}"#),
            ("run_test", "admin-token", r#"{"ok":true}"#)
        ],
        "{a}"
    );
    assert!(
        !gw.logs().contains(personas::GATEWAY_CLIENT_SECRET),
        "secrets never reach the logs"
    );

    // `If-Match: *` saves over whatever version is current (RFC 9110); only an absent one is 428.
    body["enabled"] = json!(true);
    let r = put(ADMIN, Some("*".to_string()), body.clone()).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    // Authentication comes before the query is read; a bad query is problem+json.
    let r = c.get(url("/api/v1/audit?limit=-1")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no credential: 401 whatever the query");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    for bad in ["/api/v1/audit?limit=-1", "/api/v1/computers?limit=x"] {
        let r = c.get(url(bad)).bearer_auth(READER).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{bad}");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["reason"], "invalid_query", "{bad}: {p}");
    }
}

/// A gateway syncing the emulated Entra and Jamf Pro (sharing one attribute back), with its
/// first inventory and history in: the fixture of the inventory, Send Update and CLI tests.
struct Inventory {
    emu: Emulator,
    _app: Upstream,
    gw: Gateway,
}

impl Inventory {
    async fn start() -> Self {
        use portcullis::emulator::jamf::{JAMF_CLIENT_ID, JAMF_CLIENT_SECRET};
        let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
        let body = format!(
            "{}{}\n[sync]\ninterval = \"1s\"\nintune = false\nshare = {{ extensionAttribute10 = \"jamf:{{managed}}\" }}\n[jamf]\nurl = \"{}\"\nclient_id = \"{JAMF_CLIENT_ID}\"\nclient_secret = \"{JAMF_CLIENT_SECRET}\"\n\n[[routes]]\nupstream = \"app\"\n",
            emu.entra_section(""),
            pool("app", &[app.addr], ""),
            emu.url
        );
        let gw = Gateway::start_env(
            &body,
            &[
                ("PORTCULLIS__ADMIN__TOKEN_SHA256", sha256_hex(ADMIN)),
                ("PORTCULLIS__ADMIN__READ_ONLY_TOKEN_SHA256", sha256_hex(READER)),
            ],
        )
        .await;
        let f = Self { emu, _app: app, gw };
        // Wait for the first Jamf and Entra runs (and the share that follows).
        poll_until("inventory history of computer 101", Duration::from_secs(15), || async {
            let (_, h) = f.get("/api/v1/computers/101/history").await;
            match h["items"].as_array() {
                Some(items) if !items.is_empty() => Ok(()),
                Some(_) | None => Err(h.to_string()),
            }
        })
        .await;
        f
    }

    /// GET on the admin API as the reader: status and JSON body.
    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = client()
            .get(format!("http://{}{path}", self.gw.admin))
            .bearer_auth(READER)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap_or_default(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_computers_paginate_filter_and_show_state_history_and_posture() {
    let f = Inventory::start().await;
    let get = |p: String| {
        let f = &f;
        async move { f.get(&p).await }
    };
    let (s, all) = get("/api/v1/computers".into()).await;
    assert_eq!(s, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 5, "{all}");
    let (_, page) = get("/api/v1/computers?limit=2".into()).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (_, rest) = get(format!(
        "/api/v1/computers?after={}",
        page["next_after"].as_str().unwrap()
    ))
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 3, "keyset pagination");
    let (_, carol) = get("/api/v1/computers?filter=CAROL".into()).await;
    assert_eq!(carol["items"].as_array().unwrap().len(), 1);
    let (_, unknown) = get("/api/v1/computers?state=unknown".into()).await;
    assert_eq!(unknown["items"][0]["local_user_accounts"][0]["username"], "carol");

    let (_, alice) = get("/api/v1/computers/101".into()).await;
    let acct = &alice["local_user_accounts"][0];
    assert_eq!(acct["username"], "alice");
    assert_eq!(acct["registration_state"], "ACTIVATED");
    assert_eq!(acct["compliance"]["state"], "compliant", "{alice}");
    assert_eq!(get("/api/v1/computers/9999".into()).await.0, 404);

    let (_, h) = get("/api/v1/computers/101/history".into()).await;
    assert_eq!(h["items"][0]["username"], "alice");
    assert_eq!(h["items"][0]["attributes"]["extensionAttribute10"], "jamf:managed");
    assert_eq!(h["items"][0]["result"], "ok");

    let (_, bob) = get("/api/v1/devices/d1000000-0000-4000-8000-00000000000b/posture".into()).await;
    assert_eq!(bob["posture"]["state"], "noncompliant", "{bob}");
    assert!(!bob["posture"]["reasons"].as_array().unwrap().is_empty());
    assert_eq!(bob["evidence"]["jamf"]["account"], "bob");
    let (_, nobody) = get("/api/v1/devices/e0000000-0000-4000-8000-0000000000ff/posture".into()).await;
    assert_eq!(nobody["known"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_update_runs_as_a_job_and_refuses_readers_and_bad_bodies() {
    let f = Inventory::start().await;
    let gw = &f.gw;
    let get = |p: String| {
        let f = &f;
        async move { f.get(&p).await }
    };
    let (_, h) = get("/api/v1/computers/101/history".into()).await;
    // Send Update for alice's Mac: a job that resends unchanged values and records them.
    let r = client()
        .post(format!("http://{}/api/v1/conditional-access/send-update", gw.admin))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "computer": "101" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job = r.json::<serde_json::Value>().await.unwrap()["job"]
        .as_str()
        .unwrap()
        .to_string();
    let (done, _) = poll_until("the Send Update job finished", Duration::from_secs(10), || async {
        let (_, j) = get(format!("/api/v1/jobs/{job}")).await;
        if j["status"] != "running" {
            Ok(j)
        } else {
            Err(j.to_string())
        }
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["sent"], 1);
    let (_, h2) = get("/api/v1/computers/101/history".into()).await;
    assert_eq!(
        h2["items"].as_array().unwrap().len(),
        h["items"].as_array().unwrap().len() + 1
    );
    // While a job runs (Graph answering slowly), the same request gets that job, not another.
    f.emu
        .fault(serde_json::json!({ "endpoint": "graph", "latency_ms": 2000 }))
        .await;
    let start = || {
        client()
            .post(format!("http://{}/api/v1/conditional-access/send-update", gw.admin))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "computer": "101" }))
            .send()
    };
    let r = start().await.unwrap();
    assert_eq!(r.status(), 202);
    let running = r.json::<serde_json::Value>().await.unwrap()["job"].clone();
    let r = start().await.unwrap();
    assert_eq!(r.status(), 200, "the running job, not a new one");
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/api/v1/jobs/{}", running.as_str().unwrap())
    );
    let again = r.json::<serde_json::Value>().await.unwrap();
    assert_eq!(
        (&again["job"], &again["already_running"]),
        (&running, &json!(true)),
        "{again}"
    );
    f.emu.clear_faults().await;
    poll_until("the slow Send Update finished", Duration::from_secs(10), || async {
        let (_, j) = get(format!("/api/v1/jobs/{}", running.as_str().unwrap())).await;
        if j["status"] == "succeeded" {
            Ok(())
        } else {
            Err(j.to_string())
        }
    })
    .await;
    // A node starts a burst of six jobs, then one every 10 s: then 429 with Retry-After. Two of
    // the six were used above; one more may have come back while this test ran (the exact
    // budget is the unit test's).
    let mut started = 2;
    let r = loop {
        let r = start().await.unwrap();
        if r.status() == 429 || started > 7 {
            break r;
        }
        assert_eq!(r.status(), 202);
        started += 1;
        let j = r.json::<serde_json::Value>().await.unwrap()["job"].clone();
        poll_until("the Send Update finished", Duration::from_secs(10), || async {
            let (_, s) = get(format!("/api/v1/jobs/{}", j.as_str().unwrap())).await;
            if s["status"] != "running" {
                Ok(())
            } else {
                Err(s.to_string())
            }
        })
        .await;
    };
    assert_eq!(r.status(), 429, "after {started} jobs");
    assert!((6..=7).contains(&started), "a burst of six (and a refill): {started}");
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    let p = r.json::<serde_json::Value>().await.unwrap();
    assert_eq!(p["reason"], "rate_limited", "{p}");
    let r = client()
        .post(format!("http://{}/api/v1/conditional-access/send-update", gw.admin))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "readers cannot send");
    let send = |body: &'static str| {
        client()
            .post(format!("http://{}/api/v1/conditional-access/send-update", gw.admin))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(send(r#"{"computer":"9999"}"#).await.unwrap().status(), 404);
    assert_eq!(send(r#"{"computr":"101"}"#).await.unwrap().status(), 400);
    assert_eq!(send("{not json").await.unwrap().status(), 400);
    assert_eq!(get("/api/v1/jobs/nope".into()).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_prints_tables_and_json_with_documented_exit_codes() {
    let f = Inventory::start().await;
    let (emu, gw) = (&f.emu, &f.gw);
    // The same through `portcullis admin`: tables, --json, and the documented exit codes.
    let url = format!("http://{}", gw.admin);
    let admin = |token: &str, args: &[&str]| {
        let mut cmd = tokio::process::Command::new(crate::harness::bin());
        cmd.arg("admin")
            .args(["--url", &url])
            .env("PORTCULLIS_ADMIN_TOKEN", token)
            .args(args);
        async move {
            let out = cmd.output().await.unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        }
    };
    let (code, out, err) = admin(READER, &["computers"]).await;
    assert_eq!(code, Some(0), "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(header.starts_with("ID") && header.contains("REGISTRATION"), "{out}");
    let alice_row = out.lines().find(|l| l.contains("alice")).unwrap_or_default();
    assert!(
        alice_row.contains("ACTIVATED") && alice_row.contains("compliant"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 6, "header and one row per account: {out}");
    let (code, out, _) = admin(READER, &["--json", "computers", "--filter", "carol"]).await;
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    let (code, out, _) = admin(READER, &["history", "101"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("extensionAttribute10") && out.contains("alice"), "{out}");
    let (code, out, err) = admin(ADMIN, &["send-update", "--computer", "101"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("succeeded"), "{out}");
    let (code, out, err) = admin(ADMIN, &["test-connection"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("STEP") && out.lines().count() > 2, "{out}");
    emu.fault(json!({ "endpoint": "graph", "status": 403 })).await;
    let (code, out, _) = admin(ADMIN, &["test-connection"]).await;
    assert_eq!(code, Some(1), "a failed step is exit 1: {out}");
    assert!(out.lines().any(|l| l.contains("fail")), "{out}");
    emu.clear_faults().await;
    let (code, out, _) = admin(READER, &["status"]).await;
    assert_eq!(code, Some(0));
    assert!(out.lines().any(|l| l.starts_with("jamf")), "{out}");
    // One node syncing: it leads, under the host name it runs on.
    let leader = out.lines().find(|l| l.starts_with("sync leader: ")).unwrap_or_default();
    let (led_by, this) = leader
        .strip_prefix("sync leader: ")
        .and_then(|l| l.split_once(" (term "))
        .map(|(node, rest)| (node, rest.rsplit("this node: ").next().unwrap_or_default()))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!led_by.is_empty() && led_by == this, "{out}");
    let (code, out, _) = admin(READER, &["settings", "get"]).await;
    assert_eq!(code, Some(0));
    let secret_row = out.lines().find(|l| l.starts_with("client_secret")).unwrap_or_default();
    assert!(secret_row.contains("configuration file's client_secret"), "{out}");
    assert!(
        !out.contains(personas::GATEWAY_CLIENT_SECRET),
        "secrets are never shown"
    );

    // Send Update for every computer: one history row more per shared account.
    let (code, out, err) = admin(ADMIN, &["--json", "send-update"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["result"]["sent"].as_u64().unwrap() >= 2, "{job}");

    // A new client secret through stdin: stored, shown only as set, never echoed.
    let mut cmd = tokio::process::Command::new(crate::harness::bin());
    let mut child = cmd
        .args(["admin", "--url", &url, "settings", "set", "client_secret", "-"])
        .env("PORTCULLIS_ADMIN_TOKEN", ADMIN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a-new-secret-from-stdin\n").await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(!printed.contains("a-new-secret-from-stdin"), "{printed}");
    let (_, out, _) = admin(READER, &["settings", "get"]).await;
    let secret_row = out.lines().find(|l| l.starts_with("client_secret")).unwrap_or_default();
    assert!(secret_row.contains("set (changed"), "{out}");
    assert!(
        !gw.logs().contains("a-new-secret-from-stdin"),
        "the secret never reaches the logs"
    );

    assert_eq!(admin(READER, &["computer", "9999"]).await.0, Some(5));
    assert_eq!(admin(READER, &["send-update"]).await.0, Some(4), "readers cannot send");
    assert_eq!(admin("wrong-token", &["status"]).await.0, Some(4));
    let (code, _, err) = admin(ADMIN, &["settings", "set", "no_such_key", "1"]).await;
    assert_eq!(code, Some(5), "{err}");
    let (code, _, err) = admin(ADMIN, &["settings", "set", "tenant_id", "\"not a tenant\""]).await;
    assert_eq!(code, Some(6), "invalid values are rejected: {err}");
    assert!(err.contains("tenant_id"), "the message names the field: {err}");
    let mut cmd = tokio::process::Command::new(crate::harness::bin());
    let out = cmd
        .args(["admin", "--url", "http://127.0.0.1:1", "status"])
        .env("PORTCULLIS_ADMIN_TOKEN", READER)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "an unreachable gateway is exit 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_operation_the_gateway_serves() {
    let (emu, app) = (Emulator::start().await, Upstream::start("app").await);
    let gw = gateway(&emu, &app).await;
    let r = client()
        .get(format!("http://{}/api/v1/openapi.json", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push(format!("{} {path}", method.to_uppercase()));
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path} documents 401");
            // Every {param} in the path is declared.
            for name in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(declared, "{method} {path}: {{{name}}} is declared");
            }
            // The gateway serves it: without a token the answer is 401, not 404 or 405.
            let url = format!(
                "http://{}{}",
                gw.admin,
                path.replace("{source}", "entra").replace(['{', '}'], "")
            );
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = client().request(m, url).send().await.unwrap().status();
            assert_eq!(status, 401, "{method} {path}");
        }
    }
    ops.sort();
    let mut expected = vec![
        "GET /api/v1/conditional-access",
        "PUT /api/v1/conditional-access",
        "POST /api/v1/conditional-access/test",
        "GET /api/v1/conditional-access/consent-url",
        "POST /api/v1/conditional-access/send-update",
        "GET /api/v1/jobs/{id}",
        "GET /api/v1/sync/status",
        "POST /api/v1/sync/{source}/run",
        "GET /api/v1/audit",
        "GET /api/v1/computers",
        "GET /api/v1/computers/{id}",
        "GET /api/v1/computers/{id}/history",
        "GET /api/v1/devices/{device_id}/posture",
        "POST /api/v1/explain",
        "GET /api/v1/decisions",
        "POST /api/v1/reload",
    ];
    expected.sort();
    assert_eq!(ops, expected);

    // Every body is described: each response names its content and schema, every error is a
    // Problem, and every reference resolves.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let content = response["content"].as_object();
                let want = if status.starts_with('2') {
                    "application/json"
                } else {
                    "application/problem+json"
                };
                let schema = content.and_then(|c| c.get(want)).map(|c| &c["schema"]);
                assert!(schema.is_some(), "{method} {path} {status}: {want} body described");
                if !status.starts_with('2') {
                    assert_eq!(
                        schema.unwrap()["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
            for status in ["401", "403", "503"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} documents {status}"
                );
            }
        }
    }
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "{name} is defined");
    }
    for name in [
        "Settings",
        "SettingsUpdate",
        "Saved",
        "TestReport",
        "SyncStatus",
        "AuditPage",
        "ComputerPage",
        "History",
        "Posture",
        "Job",
        "ExplainQuestion",
        "ExplainAnswer",
        "LandingChoice",
    ] {
        assert!(
            schemas[name]["properties"].is_object() || schemas[name]["oneOf"].is_array(),
            "{name}: {}",
            schemas[name]
        );
    }
    // The ranges published are the ones enforced.
    let limit = doc["paths"]["/api/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    assert_eq!(
        (limit["minimum"].as_u64(), limit["maximum"].as_u64()),
        (Some(1), Some(500)),
        "{limit}"
    );
    for (query, status) in [
        ("?limit=500", 200),
        ("?limit=501", 400),
        ("?limit=0", 400),
        ("?limit=1", 200),
    ] {
        for list in ["/api/v1/audit", "/api/v1/computers"] {
            let r = client()
                .get(format!("http://{}{list}{query}", gw.admin))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{list}{query}");
        }
    }
    // Unknown operations answer problem+json too; a wrong method says which ones are allowed.
    let r = client()
        .get(format!("http://{}/api/v1/nope", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()),
        (404, "application/problem+json")
    );
    let r = client()
        .delete(format!("http://{}/api/v1/audit", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()),
        (405, "application/problem+json")
    );
    assert!(
        r.headers()["allow"].to_str().unwrap().contains("GET"),
        "{:?}",
        r.headers()
    );
}

/// A browser's side of the console, by hand: its session cookie and the page's CSRF token.
struct ConsoleUser {
    base: String,
    cookie: String,
}

impl ConsoleUser {
    async fn sign_in(base: &str, token: &str) -> Self {
        let r = no_redirects()
            .post(format!("{base}/console/sign-in"))
            .form(&[("token", token), ("next", "/console/computers")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/console/computers");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        for attr in [
            "__Host-portcullis-console=",
            "Path=/",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(set.contains(attr), "{attr} in {set}");
        }
        let cookie = set.split(';').next().unwrap().to_string();
        Self {
            base: base.to_string(),
            cookie,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = no_redirects()
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 200 {
            assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8", "{path}");
            let csp = r.headers()["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
                "{csp}"
            );
        }
        (status, r.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], site: &str) -> (u16, String) {
        let r = no_redirects()
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("sec-fetch-site", site)
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The CSRF token the pages carry in their forms.
    async fn csrf(&self) -> String {
        let (_, page) = self.get("/console/conditional-access").await;
        hidden(&page, "csrf")
    }
}

fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in the page")) + marker.len();
    page[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_guards_every_change_and_shows_the_api() {
    let f = Inventory::start().await;
    let base = format!("http://{}", f.gw.admin);
    // Signed out: every page sends to sign-in; a wrong token is refused.
    let r = no_redirects()
        .get(format!("{base}/console/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["location"].to_str().unwrap()),
        (303, "/console/sign-in?next=%2Fconsole%2Faudit")
    );
    let r = no_redirects()
        .post(format!("{base}/console/sign-in"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    let admin = ConsoleUser::sign_in(&base, ADMIN).await;
    for (path, expect) in [
        ("/console/", "Jamf Pro inventory"),
        ("/console/conditional-access", "Enable Intune Integration for macOS"),
        ("/console/conditional-access/edit", "name=\"etag\""),
        ("/console/computers?filter=alice", "Alice"),
        ("/console/computers/101", "Conditional Access Inventory State"),
        ("/console/computers/101?tab=history", "extensionAttribute10"),
        ("/console/audit", "Audit"),
    ] {
        let (status, page) = admin.get(path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page.contains(expect), "{path} shows {expect}");
    }
    let (status, page) = admin.get("/console/nope").await;
    assert!(status == 404 && page.contains("no such page"), "{status}");

    // Changes need the session's CSRF token, from this site.
    let csrf = admin.csrf().await;
    let test = "/console/conditional-access/test";
    assert_eq!(admin.post(test, &[], "same-origin").await.0, 403, "no token");
    assert_eq!(
        admin.post(test, &[("csrf", "forged")], "same-origin").await.0,
        403,
        "a wrong token"
    );
    assert_eq!(
        admin.post(test, &[("csrf", &csrf)], "cross-site").await.0,
        403,
        "another site"
    );
    // A change answers with a redirect (so a reload repeats nothing); the page it leads to
    // shows the report once.
    let (status, _) = admin.post(test, &[("csrf", &csrf)], "same-origin").await;
    assert_eq!(status, 303);
    let (_, page) = admin.get("/console/conditional-access").await;
    assert!(
        page.contains("Run Test <span class=\"badge ok\">Passed"),
        "the report, once"
    );
    let (_, page) = admin.get("/console/conditional-access").await;
    assert!(!page.contains("Run Test <span class=\"badge"), "not twice");

    // Save, with a secret that no page ever shows; then a stale save is refused, field by field.
    let (_, edit) = admin.get("/console/conditional-access/edit").await;
    let etag = hidden(&edit, "etag");
    let form = |etag: &str, landing: &'static str, secret: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("csrf", csrf.clone()),
            ("etag", etag.to_string()),
            ("enabled", "on".into()),
            ("connection_type", "manual".into()),
            ("national_cloud", "global".into()),
            ("tenant_id", personas::TENANT_ID.into()),
            ("application_id", personas::GATEWAY_CLIENT_ID.into()),
            ("client_secret", secret.into()),
            ("landing", landing.into()),
            ("landing_url", String::new()),
            (
                "shared_attributes",
                "extensionAttribute10 = jamf:{managed}\nextensionAttribute11 = os:{os_version}\n".into(),
            ),
        ]
    };
    let post_form = |fields: Vec<(&'static str, String)>| {
        let admin = &admin;
        async move {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            admin.post("/console/conditional-access", &pairs, "same-origin").await
        }
    };
    let (status, page) = post_form(form(&etag, "access_denied", personas::GATEWAY_CLIENT_SECRET)).await;
    assert_eq!(status, 303, "{page}");
    let (_, page) = admin.get("/console/conditional-access").await;
    assert!(page.contains("Saved. Run Test passed"), "{page}");
    assert!(page.contains("The access denied page"));
    let (status, page) = post_form(form(&etag, "registration", "")).await;
    assert_eq!(status, 409, "a stale save");
    assert!(
        page.contains("someone else saved") && page.contains("landing"),
        "{page}"
    );
    let (_, now) = admin.get("/console/conditional-access").await;
    assert!(now.contains("The access denied page"), "the stale save wrote nothing");
    for path in [
        "/console/conditional-access",
        "/console/conditional-access/edit",
        "/console/audit",
    ] {
        let (_, page) = admin.get(path).await;
        assert!(
            !page.contains(personas::GATEWAY_CLIENT_SECRET),
            "{path} never shows the secret"
        );
    }
    let (_, audit) = admin.get("/console/audit").await;
    assert!(
        audit.contains("***changed***") && audit.contains("admin-token"),
        "the save is audited"
    );
    // The attributes set there are what Send Update sends (the file's were extensionAttribute10 only).
    let (_, settings) = f.get("/api/v1/conditional-access").await;
    assert_eq!(settings["shared_attributes"]["from"], "settings", "{settings}");
    let r = no_redirects()
        .post(format!("{base}/console/conditional-access/send-update"))
        .header("cookie", &admin.cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str()), ("computer", "101")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let job = r.headers()["location"].to_str().unwrap().to_string();
    assert!(job.starts_with("/console/jobs/"), "{job}");
    poll_until(
        "the console's Send Update job is done",
        Duration::from_secs(15),
        || async {
            let (_, page) = admin.get(&job).await;
            if page.contains("Done") {
                Ok(())
            } else {
                Err(page.chars().take(200).collect::<String>())
            }
        },
    )
    .await;
    let (_, history) = admin.get("/console/computers/101?tab=history").await;
    assert!(
        history.contains("extensionAttribute11"),
        "the settings' attributes were sent"
    );
    // A bad attribute name is refused by name, and nothing is written.
    let (_, edit) = admin.get("/console/conditional-access/edit").await;
    let mut bad = form(&hidden(&edit, "etag"), "access_denied", "");
    bad.retain(|(k, _)| *k != "shared_attributes");
    bad.push(("shared_attributes", "extensionAttribute16 = x".into()));
    let (status, page) = post_form(bad).await;
    assert!(status == 400 && page.contains("extensionAttribute16"), "{status}");

    // Sync now, Reload and a device's posture: the rest of the API, in the console.
    let (status, _) = admin
        .post("/console/sync/entra", &[("csrf", &csrf)], "same-origin")
        .await;
    assert_eq!(status, 303);
    let (_, overview) = admin.get("/console/?woke=entra").await;
    assert!(
        overview.contains("The sync was woken for Entra ID devices"),
        "{overview}"
    );
    let (status, page) = admin.post("/console/reload", &[("csrf", &csrf)], "same-origin").await;
    assert!(
        status == 200 && page.contains("read again and is in force"),
        "{status}: {page}"
    );
    let device = personas::find("alice").unwrap().device_id.unwrap();
    let (status, page) = admin.get(&format!("/console/devices/{device}")).await;
    assert!(
        status == 200 && page.contains("Posture now") && page.contains("Entra ID"),
        "{status}: {page}"
    );

    // A reader reads, and is refused every change even with a valid form.
    let reader = ConsoleUser::sign_in(&base, READER).await;
    let (status, page) = reader.get("/console/conditional-access").await;
    assert!(
        status == 200 && !page.contains("/console/conditional-access/edit"),
        "no Edit for a reader"
    );
    assert!(!page.contains("Send Update</button>"));
    assert_eq!(reader.get("/console/conditional-access/edit").await.0, 403);
    let reader_csrf = reader.csrf().await;
    assert_eq!(reader.post(test, &[("csrf", &reader_csrf)], "same-origin").await.0, 403);
    assert_eq!(
        reader
            .post("/console/sync/all", &[("csrf", &reader_csrf)], "same-origin")
            .await
            .0,
        403
    );
    assert_eq!(
        reader
            .post("/console/reload", &[("csrf", &reader_csrf)], "same-origin")
            .await
            .0,
        403
    );

    // Signing out ends the session on the server, not only in the browser.
    assert_eq!(
        admin
            .post("/console/sign-out", &[("csrf", &csrf)], "same-origin")
            .await
            .0,
        303
    );
    assert_eq!(admin.get("/console/").await.0, 303, "the old cookie is dead");
}
