//! What a refused request gets: a page for browser navigations (templates admins can
//! override), `application/problem+json` for every other client, or — for unrecognized
//! devices, when the admin chose so — a redirect to a custom URL with the reason and a signed
//! `return_to`. Every page shows the reason, the device id and how old the device data is.
//!
//! May depend on `policy`, `config` types and `base`; never on `access`, `proxy` or the store.

mod returns;

use std::collections::BTreeMap;

use minijinja::Environment;

pub use returns::ReturnSigner;

use config::{LandingChoice, LandingConfig};
use policy::{Landing as Kind, Posture, PostureState, Reason};

/// Built-in templates, replaceable file by file from `landing.templates_dir`.
const TEMPLATES: [(&str, &str); 6] = [
    ("base.html", include_str!("templates/base.html")),
    ("registration.html", include_str!("templates/registration.html")),
    ("remediation.html", include_str!("templates/remediation.html")),
    ("access_denied.html", include_str!("templates/access_denied.html")),
    ("stale.html", include_str!("templates/stale.html")),
    ("forbidden.html", include_str!("templates/forbidden.html")),
];

/// Which step an unrecognized device must take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Jamf does not manage the computer: enroll it.
    Enroll,
    /// Jamf manages it but Entra does not know it: register it (the computer's name if known).
    Register { computer: Option<String> },
}

/// What the landing needs to know about a refused request.
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    pub kind: Kind,
    pub reason: Reason,
    pub device_id: Option<&'a str>,
    pub posture: Option<&'a Posture>,
    /// For unrecognized devices.
    pub registration: Option<Registration>,
    /// Unix seconds.
    pub now: u64,
    /// The URL the user asked for (absolute).
    pub original_url: &'a str,
}

/// The response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Page { status: u16, html: String },
    Problem { status: u16, json: String },
    Redirect { location: String },
}

#[derive(Debug, thiserror::Error)]
#[error("landing.templates_dir: {0}")]
pub struct LandingError(String);

impl LandingError {
    /// The problem without the key (for reports that print the key themselves).
    pub fn detail(&self) -> &str {
        &self.0
    }
}

/// Renders landing answers.
pub struct Landings {
    env: Environment<'static>,
    cfg: LandingConfig,
    signer: ReturnSigner,
}

impl Landings {
    /// The configuration these landings were built from.
    pub fn config(&self) -> &LandingConfig {
        &self.cfg
    }

    pub fn new(cfg: LandingConfig, signer: ReturnSigner) -> Result<Self, LandingError> {
        if let Some(dir) = cfg.templates_dir.as_deref().filter(|d| !d.is_dir()) {
            return Err(LandingError(format!("{} is not a directory", dir.display())));
        }
        let mut env = Environment::new();
        for (name, builtin) in TEMPLATES {
            let text = match &cfg.templates_dir {
                Some(dir) if dir.join(name).is_file() => std::fs::read_to_string(dir.join(name))
                    .map_err(|e| LandingError(format!("{}: {e}", dir.join(name).display())))?,
                Some(_) | None => builtin.to_string(),
            };
            env.add_template_owned(name, text)
                .map_err(|e| LandingError(format!("{name}: {e}")))?;
        }
        Ok(Self { env, cfg, signer })
    }

    pub fn signer(&self) -> &ReturnSigner {
        &self.signer
    }

    /// Hosts outside the routes that `return_to` may point at.
    pub fn allows_return_host(&self, host: &str) -> bool {
        self.cfg.allowed_return_hosts.iter().any(|h| h == host)
    }

    /// The answer for a refused request.
    pub fn answer(&self, r: &Refusal<'_>, navigation: bool) -> Answer {
        if let (Kind::Unrecognized, LandingChoice::Custom { url }) = (r.kind, &self.cfg.unrecognized) {
            let location = self.custom_location(url, r);
            if navigation {
                return Answer::Redirect { location };
            }
            return self.problem(r, 403, Some(location));
        }
        let (status, template, title, message, action) = self.page_parts(r);
        if !navigation {
            return self.problem(r, status, action);
        }
        let (reasons, computer_name) = match r.posture {
            Some(p) => (
                match &p.state {
                    PostureState::NonCompliant { reasons } => reasons.clone(),
                    PostureState::Unsupported { reason } => vec![reason.clone()],
                    PostureState::Compliant
                    | PostureState::InGrace { .. }
                    | PostureState::NotRegistered { .. }
                    | PostureState::Disabled
                    | PostureState::Unknown => Vec::new(),
                },
                p.computer_name.clone(),
            ),
            None => (Vec::new(), None),
        };
        let (step, computer) = match &r.registration {
            Some(Registration::Register { computer }) => ("register", computer.clone()),
            Some(Registration::Enroll) | None => ("enroll", None),
        };
        let ctx = minijinja::context! {
            title => title,
            message => message,
            reason => r.reason.as_str(),
            device_id => r.device_id,
            computer_name => computer_name,
            posture_age => age_text(r.posture, r.now),
            reasons => reasons,
            step => step,
            computer => computer,
            action_url => action,
            support => self.cfg.support,
        };
        let html = self
            .env
            .get_template(template)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, template, "landing template failed; using a plain page");
                format!(
                    "<!doctype html><title>{0}</title><h1>{0}</h1><p>Reason: {1}</p>",
                    base::html::escape(title),
                    r.reason.as_str()
                )
            });
        Answer::Page { status, html }
    }

    fn page_parts(&self, r: &Refusal<'_>) -> (u16, &'static str, &'static str, &'static str, Option<String>) {
        match r.kind {
            Kind::Unrecognized => match (&self.cfg.unrecognized, &r.registration) {
                (LandingChoice::AccessDenied, _) => (
                    403,
                    "access_denied.html",
                    "Access denied",
                    "This application can only be used from a device your organisation manages and has registered.",
                    None,
                ),
                (LandingChoice::Registration | LandingChoice::Custom { .. }, Some(Registration::Register { .. })) => (
                    403,
                    "registration.html",
                    "Register this Mac",
                    "",
                    self.cfg.registration_url.clone(),
                ),
                (LandingChoice::Registration | LandingChoice::Custom { .. }, Some(Registration::Enroll) | None) => (
                    403,
                    "registration.html",
                    "Enroll this Mac",
                    "",
                    self.cfg.enrollment_url.clone(),
                ),
            },
            Kind::Remediation => (
                403,
                "remediation.html",
                "Your device needs attention",
                "",
                self.cfg.self_service_url.clone(),
            ),
            Kind::AccessDenied => (
                403,
                "access_denied.html",
                "Access denied",
                match r.reason {
                    Reason::DeviceDisabled => "This device has been disabled in your organisation's directory.",
                    Reason::DeviceUnsupported => "This device or account type is not supported for this application.",
                    Reason::OpenRoute
                    | Reason::Authenticated
                    | Reason::Unauthenticated
                    | Reason::TokenInvalid
                    | Reason::GroupDenied
                    | Reason::GroupsUnresolved
                    | Reason::DeviceUnidentified
                    | Reason::DeviceUnknown
                    | Reason::DeviceNotRegistered
                    | Reason::DeviceNoncompliant
                    | Reason::DeviceInGrace
                    | Reason::DeviceRegistered
                    | Reason::Compliant
                    | Reason::PostureStale
                    | Reason::PostureUnavailable => "Access to this application is not allowed from this device.",
                },
                None,
            ),
            Kind::Forbidden => (
                403,
                "forbidden.html",
                "Access denied",
                match r.reason {
                    Reason::GroupsUnresolved => {
                        "Your group memberships could not be checked right now. Try again shortly."
                    }
                    _ => "Your account is not in a group allowed to use this application.",
                },
                None,
            ),
            Kind::Stale => match r.reason {
                // A refusal, not a failure of the gateway: 403, so load balancers and error-rate
                // alerts do not count a database outage as the gateway's 5xx (issue 12).
                Reason::PostureUnavailable => (
                    403,
                    "stale.html",
                    "Device status unavailable",
                    "The status of your device could not be checked right now. Try again in a moment.",
                    None,
                ),
                _ => (
                    403,
                    "stale.html",
                    "Device status out of date",
                    "The last report about your device's compliance is too old to rely on.",
                    None,
                ),
            },
            // Sign-in is answered by the identity code, never here.
            Kind::SignIn => (401, "forbidden.html", "Sign in required", "Sign in to continue.", None),
        }
    }

    fn problem(&self, r: &Refusal<'_>, status: u16, landing_url: Option<String>) -> Answer {
        let mut body = BTreeMap::new();
        body.insert(
            "type",
            serde_json::json!(format!("urn:portcullis:problem:{}", r.reason.as_str())),
        );
        body.insert("title", serde_json::json!(title_for(r.reason)));
        body.insert("status", serde_json::json!(status));
        body.insert("reason", serde_json::json!(r.reason.as_str()));
        body.insert("device_id", serde_json::json!(r.device_id));
        body.insert("landing_url", serde_json::json!(landing_url));
        body.insert(
            "posture_as_of",
            serde_json::json!(r
                .posture
                .and_then(|p| base::time::rfc3339(i64::try_from(p.as_of).ok()?))),
        );
        if let Some(Posture {
            state: PostureState::NonCompliant { reasons },
            ..
        }) = r.posture
        {
            body.insert("noncompliance", serde_json::json!(reasons));
        }
        Answer::Problem {
            status,
            json: serde_json::json!(body).to_string(),
        }
    }

    fn custom_location(&self, base: &str, r: &Refusal<'_>) -> String {
        let sig = self.signer.sign(r.original_url);
        let mut url = match url::Url::parse(base) {
            Ok(u) => u,
            Err(_) => return base.to_string(),
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("reason", r.reason.as_str());
            if let Some(d) = r.device_id {
                q.append_pair("device_id", d);
            }
            q.append_pair("return_to", r.original_url);
            q.append_pair("sig", &sig);
        }
        url.to_string()
    }
}

fn title_for(r: Reason) -> &'static str {
    match r {
        Reason::DeviceUnidentified | Reason::DeviceUnknown | Reason::DeviceNotRegistered => "Device not recognized",
        Reason::DeviceNoncompliant => "Device not compliant",
        Reason::DeviceDisabled | Reason::DeviceUnsupported => "Device not allowed",
        Reason::PostureStale => "Device status out of date",
        Reason::PostureUnavailable => "Device status unavailable",
        Reason::GroupDenied | Reason::GroupsUnresolved => "Forbidden",
        Reason::Unauthenticated | Reason::TokenInvalid => "Unauthorized",
        Reason::OpenRoute
        | Reason::Authenticated
        | Reason::DeviceInGrace
        | Reason::DeviceRegistered
        | Reason::Compliant => "Allowed",
    }
}

/// "3 minutes ago", for pages.
pub fn age_text(posture: Option<&Posture>, now: u64) -> String {
    let Some(p) = posture else {
        return "no data about this device".into();
    };
    if p.as_of == 0 {
        return "no sync has confirmed this device yet".into();
    }
    let secs = now.saturating_sub(p.as_of);
    let (n, unit) = match secs {
        0..=59 => return "updated less than a minute ago".into(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("updated {n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests;
