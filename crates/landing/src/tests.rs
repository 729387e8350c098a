use super::*;
use policy::EvidenceSource;

fn cfg(unrecognized: LandingChoice) -> LandingConfig {
    LandingConfig {
        unrecognized,
        enrollment_url: Some("https://jamf.example.com/enroll".into()),
        registration_url: Some("jamfselfservice://content?entity=policy&id=42&action=view".into()),
        self_service_url: Some("jamfselfservice://".into()),
        templates_dir: None,
        support: Some("Call the IT desk at <1234>.".into()),
        allowed_return_hosts: vec![],
        assertion_key_file: None,
    }
}

fn refusal<'a>(kind: Kind, reason: Reason, posture: Option<&'a Posture>, reg: Option<Registration>) -> Refusal<'a> {
    Refusal {
        kind,
        reason,
        device_id: Some("d1000000-0000-4000-8000-00000000000b"),
        posture,
        registration: reg,
        now: 10_000,
        original_url: "https://app.example.com/docs?x=1",
    }
}

#[test]
fn pages_show_reason_device_and_age() {
    let l = Landings::new(cfg(LandingChoice::Registration), ReturnSigner::new(b"k")).unwrap();
    let p = Posture {
        state: PostureState::NonCompliant {
            reasons: vec!["FileVault <off>".into()],
        },
        source: EvidenceSource::EntraDevice,
        as_of: 10_000 - 180,
        computer_name: Some("Bob's MacBook".into()),
    };
    let Answer::Page { status, html } = l.answer(
        &refusal(Kind::Remediation, Reason::DeviceNoncompliant, Some(&p), None),
        true,
    ) else {
        panic!()
    };
    assert_eq!(status, 403);
    for needle in [
        "device_noncompliant",
        "d1000000-0000-4000-8000-00000000000b",
        "3 minutes ago",
        "FileVault &lt;off&gt;",
        "Bob&#x27;s MacBook",
        "&lt;1234&gt;",
        // The Self Service button, as the registration page has one.
        r#"<a class="action" href="jamfselfservice:&#x2f;&#x2f;">Open Self Service</a>"#,
    ] {
        assert!(html.contains(needle), "{needle} missing:\n{html}");
    }
    let Answer::Problem { status, json } = l.answer(
        &refusal(Kind::Remediation, Reason::DeviceNoncompliant, Some(&p), None),
        false,
    ) else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status, 403);
    assert_eq!(v["reason"], "device_noncompliant");
    assert_eq!(v["device_id"], "d1000000-0000-4000-8000-00000000000b");
    assert!(v["posture_as_of"].as_str().unwrap().starts_with("1970-01-01T02:4"));
    for k in ["type", "title", "status", "landing_url"] {
        assert!(v.get(k).is_some(), "{k}");
    }
}

#[test]
fn registration_steps_and_landing_choices() {
    let l = Landings::new(cfg(LandingChoice::Registration), ReturnSigner::new(b"k")).unwrap();
    let reg = Some(Registration::Register {
        computer: Some("Carol's Mac".into()),
    });
    let Answer::Page { html, .. } = l.answer(
        &refusal(Kind::Unrecognized, Reason::DeviceNotRegistered, None, reg),
        true,
    ) else {
        panic!()
    };
    assert!(
        html.contains("Register this Mac") && html.contains("Carol") && html.contains("jamfselfservice:"),
        "{html}"
    );
    let Answer::Page { html, .. } = l.answer(
        &refusal(
            Kind::Unrecognized,
            Reason::DeviceUnknown,
            None,
            Some(Registration::Enroll),
        ),
        true,
    ) else {
        panic!()
    };
    assert!(
        html.contains("Enroll this Mac") && html.contains("jamf.example.com"),
        "{html}"
    );
    let Answer::Problem { json, .. } = l.answer(
        &refusal(
            Kind::Unrecognized,
            Reason::DeviceUnknown,
            None,
            Some(Registration::Enroll),
        ),
        false,
    ) else {
        panic!()
    };
    assert!(json.contains("https://jamf.example.com/enroll"));

    let denied = Landings::new(cfg(LandingChoice::AccessDenied), ReturnSigner::new(b"k")).unwrap();
    let Answer::Page { html, status } =
        denied.answer(&refusal(Kind::Unrecognized, Reason::DeviceUnknown, None, None), true)
    else {
        panic!()
    };
    assert!(status == 403 && html.contains("Access denied"));

    let custom = Landings::new(
        cfg(LandingChoice::Custom {
            url: "https://help.example.com/device?lang=en".into(),
        }),
        ReturnSigner::new(b"k"),
    )
    .unwrap();
    let Answer::Redirect { location } = custom.answer(
        &refusal(Kind::Unrecognized, Reason::DeviceUnidentified, None, None),
        true,
    ) else {
        panic!()
    };
    let u = url::Url::parse(&location).unwrap();
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["lang"], "en");
    assert_eq!(q["reason"], "device_unidentified");
    assert_eq!(q["return_to"], "https://app.example.com/docs?x=1");
    assert!(custom
        .signer()
        .verify(&q["return_to"], &q["sig"], |h| h == "app.example.com")
        .is_some());
}

#[test]
fn templates_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("remediation.html"),
        "CUSTOM {{ reason }} {{ device_id }}",
    )
    .unwrap();
    let mut c = cfg(LandingChoice::Registration);
    c.templates_dir = Some(dir.path().to_path_buf());
    let l = Landings::new(c.clone(), ReturnSigner::new(b"k")).unwrap();
    let Answer::Page { html, .. } = l.answer(
        &refusal(Kind::Remediation, Reason::DeviceNoncompliant, None, None),
        true,
    ) else {
        panic!()
    };
    assert_eq!(html, "CUSTOM device_noncompliant d1000000-0000-4000-8000-00000000000b");
    std::fs::write(dir.path().join("stale.html"), "{% if %}").unwrap();
    assert!(
        Landings::new(c, ReturnSigner::new(b"k")).is_err(),
        "a broken template is a start-up error"
    );
}

#[test]
fn ages() {
    let p = |as_of| Posture {
        state: PostureState::Compliant,
        source: EvidenceSource::EntraDevice,
        as_of,
        computer_name: None,
    };
    assert_eq!(age_text(Some(&p(100)), 130), "updated less than a minute ago");
    assert_eq!(age_text(Some(&p(100)), 100 + 3600), "updated 1 hour ago");
    assert_eq!(age_text(Some(&p(100)), 100 + 3 * 86_400), "updated 3 days ago");
    assert_eq!(age_text(None, 0), "no data about this device");
}

#[test]
fn a_mac_found_through_the_user_is_named_the_same_way_in_heading_and_footer() {
    let l = Landings::new(cfg(LandingChoice::Registration), ReturnSigner::new(b"k")).unwrap();
    let mut r = refusal(
        Kind::Unrecognized,
        Reason::DeviceNotRegistered,
        None,
        Some(Registration::Register {
            computer: Some("Carol's MacBook Air".into()),
        }),
    );
    r.device_id = None;
    let Answer::Page { html, .. } = l.answer(&r, true) else {
        panic!()
    };
    assert!(
        html.contains("Your Mac <strong>Carol&#x27;s MacBook Air</strong>"),
        "{html}"
    );
    assert!(
        html.contains("<dd>Carol&#x27;s MacBook Air (found through your account in Jamf Pro; not registered with Microsoft Entra ID)</dd>"),
        "{html}"
    );
    assert!(
        !html.contains("not identified") && !html.contains("no data about this device"),
        "{html}"
    );
}
