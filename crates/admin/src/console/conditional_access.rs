//! The Conditional Access pages: the settings as the API shows them, Edit and Save (Run Test
//! on the new values; a stale save refused field by field), Run Test, Send Update and its job.

use super::*;

pub(super) async fn settings(State(c): C, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // What the change just before did, shown once.
    if let Some(flash) = s.flash.clone() {
        c.set_flash(&headers, &s, None).await;
        let test = Some(flash["test"].clone()).filter(|t| !t.is_null());
        return settings_page(&c, &s, test, flash["notice"].as_str()).await;
    }
    settings_page(&c, &s, None, None).await
}

/// The read view, with what just happened (a save, Run Test or a notice) above it.
pub(super) async fn settings_page(c: &Console, s: &Session, test: Option<Value>, notice: Option<&str>) -> Response {
    let current = c.get(&s.caller, "/api/v1/conditional-access").await;
    if !current.ok() {
        return c
            .pages
            .message(current.status, "Conditional Access", &current.detail(), Some(s));
    }
    let consent = c.get(&s.caller, "/api/v1/conditional-access/consent-url").await;
    c.pages.render(
        "settings.html",
        s,
        json!({
            "nav": "settings",
            "settings": current.body,
            "consent_url": consent.ok().then(|| consent.body["url"].clone()),
            "test": test,
            "notice": notice,
        }),
    )
}

pub(super) async fn edit_settings(State(c): C, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(r) = refuse_reader(&c, &s) {
        return r;
    }
    let current = c.get(&s.caller, "/api/v1/conditional-access").await;
    if !current.ok() {
        return c
            .pages
            .message(current.status, "Conditional Access", &current.detail(), Some(&s));
    }
    let etag = current
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    c.pages.render(
        "settings_edit.html",
        &s,
        json!({
            "nav": "settings", "form": current.body, "etag": etag, "error": null, "conflict": null,
            "loaded": current.body["shared_attributes"]["attributes"],
        }),
    )
}

/// The Edit form as the browser sends it: checkboxes are absent when off.
#[derive(Deserialize)]
pub(super) struct SettingsForm {
    csrf: Option<String>,
    etag: String,
    enabled: Option<String>,
    connection_type: String,
    national_cloud: String,
    tenant_id: String,
    application_id: String,
    #[serde(default)]
    client_secret: String,
    landing: String,
    #[serde(default)]
    landing_url: String,
    /// One attribute a line: `extensionAttribute10 = jamf:{managed}`.
    #[serde(default)]
    shared_attributes: String,
    /// The lines as the form showed them: unchanged, the attributes are left as they are (the
    /// configuration file's stay the file's).
    #[serde(default)]
    shared_attributes_loaded: String,
}

impl SettingsForm {
    /// The attribute lines as a map.
    fn attributes(&self) -> BTreeMap<String, String> {
        parse_attributes(&self.shared_attributes)
    }

    /// The API's body: an empty secret field keeps the stored secret.
    fn body(&self) -> Value {
        let landing = match self.landing.as_str() {
            "custom" => json!({ "kind": "custom", "url": self.landing_url.trim() }),
            other => json!({ "kind": other }),
        };
        let mut b = json!({
            "enabled": self.enabled.is_some(),
            "connection_type": self.connection_type,
            "national_cloud": self.national_cloud,
            "tenant_id": self.tenant_id.trim(),
            "application_id": self.application_id.trim(),
            "landing": landing,
        });
        let attributes = self.attributes();
        if attributes != parse_attributes(&self.shared_attributes_loaded) {
            b["shared_attributes"] = json!(attributes);
        }
        if !self.client_secret.is_empty() {
            b["client_secret"] = json!(self.client_secret);
        }
        b
    }

    /// What the form shows again after a failed save: never the secret typed.
    fn redisplay(&self, secret: &Value) -> Value {
        json!({
            "enabled": self.enabled.is_some(),
            "connection_type": self.connection_type,
            "national_cloud": self.national_cloud,
            "tenant_id": self.tenant_id,
            "application_id": self.application_id,
            "client_secret": secret,
            "landing": match self.landing.as_str() {
                "custom" => json!({ "kind": "custom", "url": self.landing_url }),
                other => json!({ "kind": other }),
            },
            "shared_attributes": { "attributes": self.attributes() },
        })
    }
}

pub(super) async fn save_settings(State(c): C, headers: HeaderMap, Form(f): Form<SettingsForm>) -> Response {
    let s = match admin_form(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let saved = c
        .call(
            &s.caller,
            Method::PUT,
            "/api/v1/conditional-access",
            &[(header::IF_MATCH, f.etag.clone())],
            Some(f.body()),
        )
        .await;
    if saved.ok() {
        let test = saved.body["test"].clone();
        let notice = match test["ok"].as_bool() {
            None => "Saved. The sync does not run on this node, so Run Test did not run.",
            Some(true) => "Saved. Run Test passed with the new settings.",
            Some(false) => {
                "Saved, but Run Test failed with the new settings: the step below says why. Fix it and save again."
            }
        };
        return c
            .after_change(&headers, &s, (!test.is_null()).then_some(test), Some(notice))
            .await;
    }
    // The form again, with what went wrong; a stale save shows what someone else changed.
    let current = c.get(&s.caller, "/api/v1/conditional-access").await;
    let secret = current.body["client_secret"].clone();
    let (status, error, conflict, etag) = if saved.status == StatusCode::PRECONDITION_FAILED {
        let mut changed = Vec::new();
        let mine = f.redisplay(&secret);
        for field in [
            "enabled",
            "connection_type",
            "national_cloud",
            "tenant_id",
            "application_id",
            "landing",
        ] {
            if current.body[field] != mine[field] {
                changed.push(
                    json!({ "field": field, "theirs": shown(&current.body[field]), "yours": shown(&mine[field]) }),
                );
            }
        }
        let (theirs, yours) = (
            &current.body["shared_attributes"]["attributes"],
            &mine["shared_attributes"]["attributes"],
        );
        if theirs != yours {
            changed.push(json!({ "field": "shared_attributes", "theirs": shown(theirs), "yours": shown(yours) }));
        }
        let fresh = current
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (StatusCode::CONFLICT, None, Some(changed), fresh)
    } else {
        (saved.status, Some(saved.detail()), None, f.etag.clone())
    };
    let mut r = c.pages.render(
        "settings_edit.html",
        &s,
        json!({
            "nav": "settings", "form": f.redisplay(&secret), "etag": etag, "error": error, "conflict": conflict,
            // What is stored now: the next save sends the attributes only if they differ.
            "loaded": current.body["shared_attributes"]["attributes"],
        }),
    );
    *r.status_mut() = status;
    r
}

/// Attribute lines (`name = value`) as a map; a line without `=` is kept whole as a name, for
/// the API to refuse by name.
pub(super) fn parse_attributes(lines: &str) -> BTreeMap<String, String> {
    lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// A setting's value as the stale-edit table shows it, in words.
pub(super) fn shown(v: &Value) -> String {
    match v {
        Value::Bool(true) => "enabled".into(),
        Value::Bool(false) => "disabled".into(),
        Value::String(s) => s.replace('_', " "),
        Value::Object(o) => match o.get("kind").and_then(Value::as_str) {
            Some("registration") => "the device registration page".into(),
            Some("access_denied") => "the access denied page".into(),
            Some(_) => format!("the custom URL {}", o.get("url").and_then(Value::as_str).unwrap_or("")),
            None if o.is_empty() => "none".into(),
            None => o
                .iter()
                .map(|(k, v)| format!("{k} = {}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; "),
        },
        Value::Null | Value::Number(_) | Value::Array(_) => v.to_string(),
    }
}

pub(super) async fn run_test(State(c): C, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    let s = match admin_form(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let report = c
        .call(&s.caller, Method::POST, "/api/v1/conditional-access/test", &[], None)
        .await;
    if !report.ok() {
        return c.pages.message(report.status, "Run Test", &report.detail(), Some(&s));
    }
    c.after_change(&headers, &s, Some(report.body), None).await
}

#[derive(Deserialize)]
pub(super) struct SendUpdateForm {
    csrf: Option<String>,
    #[serde(default)]
    computer: String,
}

pub(super) async fn send_update(State(c): C, headers: HeaderMap, Form(f): Form<SendUpdateForm>) -> Response {
    let s = match admin_form(&c, &headers, f.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = match f.computer.trim() {
        "" => json!({}),
        id => json!({ "computer": id }),
    };
    let started = c
        .call(
            &s.caller,
            Method::POST,
            "/api/v1/conditional-access/send-update",
            &[],
            Some(body),
        )
        .await;
    match started.body["job"].as_str() {
        Some(id) if started.ok() => Redirect::to(&format!("/console/jobs/{}", path_segment(id))).into_response(),
        Some(_) | None => c
            .pages
            .message(started.status, "Send Update", &started.detail(), Some(&s)),
    }
}

#[derive(Deserialize)]
pub(super) struct JobQuery {
    format: Option<String>,
}

pub(super) async fn job(
    State(c): C,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
) -> Response {
    let s = match signed_in(&c, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let j = c.get(&s.caller, &format!("/api/v1/jobs/{}", path_segment(&id))).await;
    if q.format.as_deref() == Some("json") {
        // For the page's progress script: the same job, same-origin, with the session.
        return (j.status, axum::Json(j.body)).into_response();
    }
    if !j.ok() {
        return c.pages.message(j.status, "Job", &j.detail(), Some(&s));
    }
    c.pages
        .render("job.html", &s, json!({ "nav": "settings", "job": j.body }))
}
