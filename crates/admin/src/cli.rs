//! `portcullis admin …`: the admin API from a shell. Every sub-command is one or two calls to
//! `/api/v1/…` on a running gateway; the output is a short human table, or the API's JSON with
//! `--json`. Exit codes (stable, for scripts): see [`Exit`].
//!
//! Depends only on the HTTP API (reqwest), never on the gateway's internals, so it works
//! against any node of the same version. The one exception is `explain --persona`, which
//! first asks the demo's emulator for the persona's token.

use std::io::Read;
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

/// Exit codes the CLI promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// The call worked and reports a failure (Run Test failed a step; a job failed; explain:
    /// the gateway would refuse the request).
    Failed = 1,
    /// The gateway could not be reached, or answered something that is not its API.
    Unreachable = 3,
    /// 401/403: no token, a wrong token, or a read-only token for a change.
    Refused = 4,
    /// 404: no such computer, device, job or setting.
    NotFound = 5,
    /// Any other refusal: invalid value (400/422), stale write (412), sync off (409), 5xx.
    Rejected = 6,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Per-source sync status: last success, lag, last error.
    Status,
    /// Read the gateway's configuration file again and apply it (as SIGHUP does). Exit 0:
    /// applied; 6: refused, every error listed.
    Reload,
    /// Run Test: every step of the connection to Microsoft, with its result.
    TestConnection,
    /// Send Update: resend inventory to Microsoft (all computers, or one) and wait for it.
    SendUpdate {
        #[arg(long)]
        computer: Option<String>,
    },
    /// The Jamf inventory with each account's Conditional Access state.
    Computers {
        /// Substring of a name, serial or username.
        #[arg(long)]
        filter: Option<String>,
        /// ACTIVATED, DEACTIVATED, UNRESPONSIVE or UNKNOWN.
        #[arg(long)]
        state: Option<String>,
    },
    /// One computer, by Jamf id.
    Computer { id: String },
    /// Inventory sent to Microsoft for a computer, newest first.
    History { id: String },
    /// What If: the decision the gateway would make now for a URL, a user and a device, with
    /// every piece of evidence; nothing is sent upstream. Exit 0: allowed; 1: refused.
    Explain {
        /// The URL a client would ask for, e.g. https://127.0.0.1:8443/ (or give --route).
        #[arg(long, conflicts_with = "route")]
        url: Option<String>,
        /// A route by name (its host must be exact), with --path.
        #[arg(long)]
        route: Option<String>,
        #[arg(long, requires = "route")]
        path: Option<String>,
        /// An Entra access token (`-`: read it from stdin).
        #[arg(long, conflicts_with_all = ["user", "persona"])]
        token: Option<String>,
        /// A user by object id or UPN, without a token (groups come from Graph).
        #[arg(long, conflicts_with = "persona")]
        user: Option<String>,
        /// A demo persona (alice, bob, carol, dave, erin, olivia): its token comes from the
        /// emulator at --emulator.
        #[arg(long)]
        persona: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:8900")]
        emulator: String,
        /// The Entra device id (with a token, it replaces the token's deviceid claim).
        #[arg(long)]
        device: Option<String>,
        /// How the device is identified: token, certificate or session.
        #[arg(long, requires = "device")]
        device_source: Option<String>,
        /// Answer as for a browser navigation (pages and redirects) rather than an API client.
        #[arg(long)]
        browser: bool,
    },
    /// The Conditional Access settings.
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum SettingsCommand {
    /// Show the settings (secrets only as "set, when").
    Get,
    /// Change one setting: a JSON value (`true`, `{"kind":"access_denied"}`) or plain text.
    /// For `client_secret`, give `-` and pass the secret on stdin, keeping it out of `ps`.
    Set { key: String, value: String },
}

/// Runs one sub-command against `url` and prints its output.
pub fn run(url: &str, token: &str, json: bool, cmd: AdminCommand) -> Exit {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis admin: cannot start the runtime: {e}");
            return Exit::Unreachable;
        }
    };
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(60)).build() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("portcullis admin: HTTP client: {e}");
            return Exit::Unreachable;
        }
    };
    let client = Client {
        http,
        base: url.trim_end_matches('/').to_string(),
        token: token.to_string(),
    };
    match rt.block_on(command(&client, json, cmd)) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("portcullis admin: {}", e.message);
            e.exit
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

struct CliError {
    exit: Exit,
    message: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, Option<String>), CliError> {
        self.call_if(method, path, body, None).await
    }

    /// One API call; a problem+json answer becomes an error with its detail and exit code.
    async fn call_if(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<(Value, Option<String>), CliError> {
        let unreachable = |m: String| CliError {
            exit: Exit::Unreachable,
            message: m,
        };
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(tag) = if_match {
            req = req.header(reqwest::header::IF_MATCH, tag);
        }
        // The error names the URL only; reqwest never puts the bearer token in it.
        let resp = req
            .send()
            .await
            .map_err(|e| unreachable(format!("{}: {e}", self.base)))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp
            .text()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|_| unreachable(format!("{path}: HTTP {status}, not the admin API's JSON")))?;
        if status.is_success() {
            return Ok((value, etag));
        }
        let exit = match status.as_u16() {
            401 | 403 => Exit::Refused,
            404 => Exit::NotFound,
            _ => Exit::Rejected,
        };
        let detail = value["detail"].as_str().unwrap_or("no detail");
        Err(CliError {
            exit,
            message: format!("HTTP {status}: {detail}"),
        })
    }
}

async fn command(c: &Client, json: bool, cmd: AdminCommand) -> Result<Exit, CliError> {
    use reqwest::Method;
    match cmd {
        AdminCommand::Reload => {
            let (v, _) = c.call(Method::POST, "/api/v1/reload", None).await?;
            let applied = v["applied"] == Value::Bool(true);
            print(json, &v, || {
                let mut t = vec![row(&["KEY", "RESULT"])];
                if applied {
                    t.push(row(&["applied", &text(&v["summary"])]));
                }
                for s in v["need_restart"].as_array().into_iter().flatten() {
                    t.push(row(&[&text(s), "changed; applies only at the next start"]));
                }
                for w in v["warnings"].as_array().into_iter().flatten() {
                    t.push(row(&["warning", &text(w)]));
                }
                for e in v["errors"].as_array().into_iter().flatten() {
                    t.push(row(&[&text(&e["key"]), &text(&e["message"])]));
                }
                t
            });
            Ok(if applied { Exit::Ok } else { Exit::Rejected })
        }
        AdminCommand::Status => {
            let (v, _) = c.call(Method::GET, "/api/v1/sync/status", None).await?;
            print(json, &v, || {
                let mut t = vec![row(&["SOURCE", "LAST SUCCESS", "LAG (s)", "LAST ERROR"])];
                for source in ["entra", "intune", "jamf", "share"] {
                    let s = &v[source];
                    t.push(row(&[
                        source,
                        &text(&s["last_success"]),
                        &text(&s["lag_seconds"]),
                        &text(&s["last_error"]["error"]),
                    ]));
                }
                t
            });
            if !json {
                match v["leader"].as_object() {
                    Some(l) => println!(
                        "sync leader: {} (term {}, lease {} s left); this node: {}",
                        text(&l["node"]),
                        text(&l["term"]),
                        text(&l["lease_left_seconds"]),
                        text(&v["this_node"])
                    ),
                    None => println!("sync leader: none; this node: {}", text(&v["this_node"])),
                }
            }
            Ok(Exit::Ok)
        }
        AdminCommand::TestConnection => {
            let (v, _) = c.call(Method::POST, "/api/v1/conditional-access/test", None).await?;
            print(json, &v, || {
                let mut t = vec![row(&["STEP", "RESULT", "MESSAGE"])];
                for s in v["steps"].as_array().into_iter().flatten() {
                    t.push(row(&[&text(&s["name"]), &text(&s["status"]), &text(&s["message"])]));
                }
                t
            });
            Ok(if v["ok"] == Value::Bool(true) {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        AdminCommand::SendUpdate { computer } => {
            let body = serde_json::json!({ "computer": computer });
            let (v, _) = c
                .call(Method::POST, "/api/v1/conditional-access/send-update", Some(body))
                .await?;
            let job = text(&v["job"]);
            let done = loop {
                let (j, _) = c.call(Method::GET, &format!("/api/v1/jobs/{job}"), None).await?;
                if j["status"] != "running" {
                    break j;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            print(json, &done, || {
                vec![
                    row(&["JOB", "STATUS", "SENT", "ERROR"]),
                    row(&[
                        &job,
                        &text(&done["status"]),
                        &text(&done["result"]["sent"]),
                        &text(&done["result"]["error"]),
                    ]),
                ]
            });
            Ok(if done["status"] == "succeeded" {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        AdminCommand::Computers { filter, state } => {
            let mut items = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("limit", "500");
                if let Some(f) = &filter {
                    q.append_pair("filter", f);
                }
                if let Some(s) = &state {
                    q.append_pair("state", s);
                }
                if let Some(a) = &after {
                    q.append_pair("after", a);
                }
                let (v, _) = c
                    .call(Method::GET, &format!("/api/v1/computers?{}", q.finish()), None)
                    .await?;
                items.extend(v["items"].as_array().cloned().unwrap_or_default());
                match v["next_after"].as_str() {
                    Some(n) => after = Some(n.to_string()),
                    None => break,
                }
            }
            let all = serde_json::json!({ "items": items });
            print(json, &all, || computer_rows(&items));
            Ok(Exit::Ok)
        }
        AdminCommand::Computer { id } => {
            let (v, _) = c
                .call(
                    Method::GET,
                    &format!("/api/v1/computers/{}", crate::path_segment(&id)),
                    None,
                )
                .await?;
            print(json, &v, || computer_rows(std::slice::from_ref(&v)));
            Ok(Exit::Ok)
        }
        AdminCommand::History { id } => {
            let (v, _) = c
                .call(
                    Method::GET,
                    &format!("/api/v1/computers/{}/history", crate::path_segment(&id)),
                    None,
                )
                .await?;
            print(json, &v, || {
                let mut t = vec![row(&["SENT AT", "USERNAME", "RESULT", "ATTRIBUTES"])];
                for h in v["items"].as_array().into_iter().flatten() {
                    t.push(row(&[
                        &text(&h["sent_at"]),
                        &text(&h["username"]),
                        &text(&h["result"]),
                        &h["attributes"].to_string(),
                    ]));
                }
                t
            });
            Ok(Exit::Ok)
        }
        AdminCommand::Explain {
            url,
            route,
            path,
            token,
            user,
            persona,
            emulator,
            device,
            device_source,
            browser,
        } => {
            let token = match (token.as_deref(), persona) {
                (Some("-"), _) => Some(read_stdin("the token")?),
                (Some(t), _) => Some(t.to_string()),
                (None, Some(p)) => Some(
                    persona_token(&c.http, &emulator, &p)
                        .await
                        .map_err(|message| CliError {
                            exit: Exit::Unreachable,
                            message,
                        })?,
                ),
                (None, None) => None,
            };
            let body = serde_json::json!({
                "url": url, "route": route, "path": path, "token": token, "user": user,
                "device_id": device, "device_source": device_source, "browser": browser,
            });
            let (v, _) = c.call(Method::POST, "/api/v1/explain", Some(body)).await?;
            print(json, &v, || explain_rows(&v));
            Ok(if v["outcome"] == "allow" {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        AdminCommand::Settings {
            command: SettingsCommand::Get,
        } => {
            let (v, _) = c.call(Method::GET, "/api/v1/conditional-access", None).await?;
            print(json, &v, || settings_rows(&v));
            Ok(Exit::Ok)
        }
        AdminCommand::Settings {
            command: SettingsCommand::Set { key, value },
        } => {
            let (current, etag) = c.call(Method::GET, "/api/v1/conditional-access", None).await?;
            let Value::Object(mut body) = current else {
                return Err(CliError {
                    exit: Exit::Unreachable,
                    message: "the settings are not an object".into(),
                });
            };
            // The GET shows the secret as {set, changed_at} and the shared attributes with where
            // they come from; the PUT keeps both when absent.
            body.remove("client_secret");
            body.remove("shared_attributes");
            let value = if key == "client_secret" && value == "-" {
                Value::String(read_stdin("the secret")?)
            } else {
                serde_json::from_str(&value).unwrap_or(Value::String(value))
            };
            // Shown reshaped by the GET, so set by name.
            let reshaped = ["client_secret", "shared_attributes"];
            if !reshaped.contains(&key.as_str()) && !body.contains_key(&key) {
                let keys: Vec<&String> = body.keys().collect();
                return Err(CliError {
                    exit: Exit::NotFound,
                    message: format!("no setting {key:?}; settings are {keys:?}, client_secret and shared_attributes"),
                });
            }
            body.insert(key, value);
            let (v, _) = c
                .call_if(
                    Method::PUT,
                    "/api/v1/conditional-access",
                    Some(Value::Object(body)),
                    etag.as_deref(),
                )
                .await?;
            print(json, &v, || {
                let mut t = settings_rows(&v["settings"]);
                t.push(row(&["version", &text(&v["version"])]));
                t.push(row(&[
                    "test",
                    if v["test"]["ok"] == Value::Bool(true) {
                        "ok"
                    } else {
                        "failed (see --json)"
                    },
                ]));
                t
            });
            Ok(Exit::Ok)
        }
    }
}

/// One line of stdin (a secret or a token kept out of `ps`).
fn read_stdin(what: &str) -> Result<String, CliError> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| CliError {
        exit: Exit::Rejected,
        message: format!("reading {what} from stdin: {e}"),
    })?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// A demo persona's access token from the emulator's token endpoint (DESIGN.md §8).
pub async fn persona_token(http: &reqwest::Client, emulator: &str, persona: &str) -> Result<String, String> {
    let base = emulator.trim_end_matches('/');
    let resp = http
        .get(format!("{base}/_emulator/token"))
        .query(&[("persona", persona)])
        .send()
        .await
        .map_err(|e| format!("{base}: {}", e.without_url()))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|_| format!("{base}: HTTP {status}, not the emulator's token endpoint"))?;
    match body.get("access_token").and_then(Value::as_str) {
        Some(t) if status.is_success() => Ok(t.to_string()),
        Some(_) | None => {
            let why = ["error_description", "error", "detail"]
                .iter()
                .find_map(|k| body[*k].as_str())
                .map_or_else(|| body.to_string(), str::to_string);
            Err(format!("{base}: HTTP {status}: {why}"))
        }
    }
}

fn explain_rows(v: &Value) -> Vec<Vec<String>> {
    let e = &v["evidence"];
    let r = &v["response"];
    let response = if r["forwarded_upstream"] == Value::Bool(true) {
        "forwarded upstream".to_string()
    } else {
        match r["location"].as_str().or(r["redirect"].as_str()) {
            Some(l) => format!("{} -> {l}", text(&r["status"])),
            None => text(&r["status"]),
        }
    };
    let credential = &e["credential"];
    let who = match credential["kind"].as_str() {
        Some(kind) => format!(
            "{kind} {} ({})",
            text(&credential["username"]),
            text(&credential["object_id"])
        ),
        None => "none".to_string(),
    };
    let device = match e["device"]["id"].as_str() {
        Some(id) => format!("{id} (from {})", text(&e["device"]["source"])),
        None => "-".to_string(),
    };
    let posture = &e["posture"];
    let posture = match posture["state"].as_str() {
        Some(state) => format!(
            "{state} from {}, {} s old{}",
            text(&posture["source"]),
            text(&posture["age_seconds"]),
            match posture["reasons"].as_array() {
                Some(r) if !r.is_empty() => format!(": {}", r.iter().map(text).collect::<Vec<_>>().join("; ")),
                Some(_) | None => String::new(),
            }
        ),
        None => text(&e["posture_lookup"]),
    };
    let registration = match e["registration"]["step"].as_str() {
        Some(step) => format!("{step} {}", text(&e["registration"]["computer"])),
        None => "-".to_string(),
    };
    vec![
        row(&["DECISION", &format!("{} ({})", text(&v["outcome"]), text(&v["reason"]))]),
        row(&["route", &text(&v["route"])]),
        row(&["url", &text(&v["url"])]),
        row(&["landing", &text(&v["landing"])]),
        row(&["response", &response]),
        row(&["require", &text(&e["policy"]["require"])]),
        row(&["mode", &text(&e["policy"]["mode"])]),
        row(&["credential", &who]),
        row(&["groups", &text(&e["groups"])]),
        row(&["device", &device]),
        row(&["posture", &posture]),
        row(&["registration", &registration]),
    ]
}

fn computer_rows(items: &[Value]) -> Vec<Vec<String>> {
    let mut t = vec![row(&[
        "ID",
        "NAME",
        "SERIAL",
        "USER",
        "REGISTRATION",
        "COMPLIANCE",
        "ENTRA DEVICE",
    ])];
    for c in items {
        let accounts = c["local_user_accounts"].as_array().cloned().unwrap_or_default();
        if accounts.is_empty() {
            t.push(row(&[
                &text(&c["id"]),
                &text(&c["name"]),
                &text(&c["serial"]),
                "-",
                "-",
                "-",
                "-",
            ]));
        }
        for a in &accounts {
            t.push(row(&[
                &text(&c["id"]),
                &text(&c["name"]),
                &text(&c["serial"]),
                &text(&a["username"]),
                &text(&a["registration_state"]),
                &text(&a["compliance"]["state"]),
                &text(&a["entra_device_id"]),
            ]));
        }
    }
    t
}

fn settings_rows(v: &Value) -> Vec<Vec<String>> {
    let mut t = vec![row(&["SETTING", "VALUE"])];
    for (k, val) in v.as_object().into_iter().flatten() {
        let shown = if k == "client_secret" {
            match (&val["set"], &val["file_credential"]) {
                (Value::Bool(true), _) => format!("set (changed {})", text(&val["changed_at"])),
                (_, Value::String(file)) => format!("not set; the configuration file's {file} is used"),
                _ => "not set".to_string(),
            }
        } else {
            text(val)
        };
        t.push(row(&[k, &shown]));
    }
    t
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// A JSON value as a table cell: strings bare, null as "-".
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print(json: bool, v: &Value, table: impl FnOnce() -> Vec<Vec<String>>) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let rows = table();
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
