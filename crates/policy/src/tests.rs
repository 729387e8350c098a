use super::*;

const NOW: u64 = 1_800_000_000;

fn posture(state: PostureState, age: u64) -> Posture {
    Posture {
        state,
        source: EvidenceSource::EntraDevice,
        as_of: NOW - age,
        computer_name: None,
    }
}

fn facts(device: Device<'_>) -> Facts<'_> {
    Facts {
        user: User::Authenticated,
        groups: Groups::NotRequired,
        device,
        now: NOW,
    }
}

fn id(p: &Posture) -> Device<'_> {
    Device::Identified {
        source: DeviceSource::TokenClaim,
        posture: Some(p),
    }
}

#[test]
fn every_row_of_the_decision_table() {
    let policy = RoutePolicy::default();
    let noncompliant = posture(
        PostureState::NonCompliant {
            reasons: vec!["FileVault off".into()],
        },
        60,
    );
    let compliant = posture(PostureState::Compliant, 60);
    let grace = posture(PostureState::InGrace { until: NOW + 3600 }, 60);
    let grace_over = posture(PostureState::InGrace { until: NOW - 1 }, 60);
    let stale = posture(PostureState::Compliant, policy.max_posture_age + 1);
    let not_registered = posture(PostureState::NotRegistered { jamf_managed: true }, 60);
    let disabled = posture(PostureState::Disabled, 60);
    let unsupported = posture(
        PostureState::Unsupported {
            reason: "macOS 10.10".into(),
        },
        60,
    );
    let unknown = posture(PostureState::Unknown, 60);

    let user = |u| Facts {
        user: u,
        groups: Groups::NotRequired,
        device: Device::Unidentified,
        now: NOW,
    };
    let groups = |g| Facts {
        user: User::Authenticated,
        groups: g,
        device: id(&compliant),
        now: NOW,
    };
    let cases: Vec<(&str, Facts<'_>, Outcome, Reason)> = vec![
        (
            "no credential",
            user(User::Anonymous),
            Outcome::Deny(Landing::SignIn),
            Reason::Unauthenticated,
        ),
        (
            "bad credential",
            user(User::InvalidCredential),
            Outcome::Deny(Landing::SignIn),
            Reason::TokenInvalid,
        ),
        (
            "not in groups",
            groups(Groups::NotMember),
            Outcome::Deny(Landing::Forbidden),
            Reason::GroupDenied,
        ),
        (
            "groups unresolved",
            groups(Groups::Unresolved),
            Outcome::Deny(Landing::Forbidden),
            Reason::GroupsUnresolved,
        ),
        ("in groups", groups(Groups::Member), Outcome::Allow, Reason::Compliant),
        (
            "no device identity",
            facts(Device::Unidentified),
            Outcome::Deny(Landing::Unrecognized),
            Reason::DeviceUnidentified,
        ),
        (
            "device not in the store",
            facts(Device::Identified {
                source: DeviceSource::TokenClaim,
                posture: None,
            }),
            Outcome::Deny(Landing::Unrecognized),
            Reason::DeviceUnknown,
        ),
        (
            "no source knows it",
            facts(id(&unknown)),
            Outcome::Deny(Landing::Unrecognized),
            Reason::DeviceUnknown,
        ),
        (
            "not registered",
            facts(id(&not_registered)),
            Outcome::Deny(Landing::Unrecognized),
            Reason::DeviceNotRegistered,
        ),
        (
            "disabled",
            facts(id(&disabled)),
            Outcome::Deny(Landing::AccessDenied),
            Reason::DeviceDisabled,
        ),
        (
            "noncompliant",
            facts(id(&noncompliant)),
            Outcome::Deny(Landing::Remediation),
            Reason::DeviceNoncompliant,
        ),
        ("in grace", facts(id(&grace)), Outcome::Allow, Reason::DeviceInGrace),
        (
            "grace over",
            facts(id(&grace_over)),
            Outcome::Deny(Landing::Remediation),
            Reason::DeviceNoncompliant,
        ),
        ("compliant", facts(id(&compliant)), Outcome::Allow, Reason::Compliant),
        (
            "stale",
            facts(id(&stale)),
            Outcome::Deny(Landing::Stale),
            Reason::PostureStale,
        ),
        (
            "unsupported",
            facts(id(&unsupported)),
            Outcome::Deny(Landing::AccessDenied),
            Reason::DeviceUnsupported,
        ),
        (
            "store unavailable",
            facts(Device::Unavailable {
                source: DeviceSource::Session,
            }),
            Outcome::Deny(Landing::Stale),
            Reason::PostureUnavailable,
        ),
    ];
    for (name, f, outcome, reason) in cases {
        let d = decide(&policy, &f);
        assert_eq!((d.outcome, d.reason), (outcome, reason), "{name}");
        assert_eq!(d.would_deny, None, "{name}");
    }
}

#[test]
fn route_settings_change_the_outcome() {
    let noncompliant = posture(PostureState::NonCompliant { reasons: vec![] }, 60);
    let grace = posture(PostureState::InGrace { until: NOW + 60 }, 60);
    let stale = posture(PostureState::Compliant, 100);

    let open = RoutePolicy {
        require: Require::Nothing,
        ..RoutePolicy::default()
    };
    assert_eq!(
        decide(
            &open,
            &Facts {
                user: User::Anonymous,
                ..facts(Device::Unidentified)
            }
        )
        .reason,
        Reason::OpenRoute
    );

    let auth_only = RoutePolicy {
        require: Require::Authenticated,
        ..RoutePolicy::default()
    };
    let d = decide(&auth_only, &facts(Device::Unidentified));
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::Authenticated));

    let registered = RoutePolicy {
        require: Require::RegisteredDevice,
        ..RoutePolicy::default()
    };
    let d = decide(&registered, &facts(id(&noncompliant)));
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::DeviceRegistered));
    let nr = posture(PostureState::NotRegistered { jamf_managed: false }, 1);
    assert_eq!(decide(&registered, &facts(id(&nr))).reason, Reason::DeviceNotRegistered);

    let no_grace = RoutePolicy {
        allow_grace_period: false,
        ..RoutePolicy::default()
    };
    assert_eq!(decide(&no_grace, &facts(id(&grace))).reason, Reason::DeviceNoncompliant);

    let short = RoutePolicy {
        max_posture_age: 50,
        ..RoutePolicy::default()
    };
    assert_eq!(
        decide(&short, &facts(id(&stale))).outcome,
        Outcome::Deny(Landing::Stale)
    );
    let lenient = RoutePolicy {
        max_posture_age: 50,
        on_stale: OnStale::AllowLastKnown,
        ..RoutePolicy::default()
    };
    let d = decide(&lenient, &facts(id(&stale)));
    assert_eq!((d.outcome, d.reason), (Outcome::Allow, Reason::PostureStale));
    // A stale non-compliant posture is still refused as non-compliant.
    let stale_bad = posture(PostureState::NonCompliant { reasons: vec![] }, 100);
    assert_eq!(
        decide(&lenient, &facts(id(&stale_bad))).reason,
        Reason::DeviceNoncompliant
    );

    let report = RoutePolicy {
        mode: Mode::ReportOnly,
        ..RoutePolicy::default()
    };
    let d = decide(&report, &facts(id(&noncompliant)));
    assert_eq!(
        (d.outcome, d.reason, d.would_deny),
        (Outcome::Allow, Reason::DeviceNoncompliant, Some(Landing::Remediation))
    );
    let d = decide(
        &report,
        &Facts {
            user: User::Anonymous,
            ..facts(Device::Unidentified)
        },
    );
    assert_eq!(
        d.outcome,
        Outcome::Deny(Landing::SignIn),
        "report-only never skips authentication"
    );
}

/// Exhaustive over every combination of inputs (states × ages × grace ends × policies × users
/// × groups × device cases): an enforcing route that requires a compliant device never allows
/// a device that is not compliant or in a running grace period, nor stale evidence unless the
/// route says so, nor an unauthenticated user.
#[test]
fn never_allows_what_it_must_not() {
    let states = |until: u64| {
        vec![
            PostureState::Compliant,
            PostureState::InGrace { until },
            PostureState::NonCompliant { reasons: vec![] },
            PostureState::NotRegistered { jamf_managed: true },
            PostureState::NotRegistered { jamf_managed: false },
            PostureState::Disabled,
            PostureState::Unknown,
            PostureState::Unsupported { reason: String::new() },
        ]
    };
    let mut checked = 0;
    for require in [Require::CompliantDevice, Require::RegisteredDevice] {
        for allow_grace_period in [true, false] {
            for on_stale in [OnStale::Deny, OnStale::AllowLastKnown] {
                for max_posture_age in [0, 60, 86_400] {
                    let policy = RoutePolicy {
                        require,
                        allow_grace_period,
                        max_posture_age,
                        on_stale,
                        mode: Mode::Enforce,
                    };
                    for until in [NOW - 10, NOW, NOW + 10] {
                        for state in states(until) {
                            for age in [0, 59, 60, 61, 86_401] {
                                let p = posture(state.clone(), age);
                                for user in [User::Anonymous, User::InvalidCredential, User::Authenticated] {
                                    for groups in [
                                        Groups::NotRequired,
                                        Groups::Member,
                                        Groups::NotMember,
                                        Groups::Unresolved,
                                    ] {
                                        for device in [
                                            Device::Unidentified,
                                            Device::Unavailable {
                                                source: DeviceSource::TokenClaim,
                                            },
                                            Device::Identified {
                                                source: DeviceSource::TokenClaim,
                                                posture: None,
                                            },
                                            Device::Identified {
                                                source: DeviceSource::ClientCertificate,
                                                posture: Some(&p),
                                            },
                                        ] {
                                            let d = decide(
                                                &policy,
                                                &Facts {
                                                    user,
                                                    groups,
                                                    device,
                                                    now: NOW,
                                                },
                                            );
                                            checked += 1;
                                            if !d.is_allowed() {
                                                continue;
                                            }
                                            assert_eq!(user, User::Authenticated);
                                            assert!(matches!(groups, Groups::NotRequired | Groups::Member));
                                            let Device::Identified { posture: Some(p), .. } = device else {
                                                panic!("allowed without a known device: {d:?}");
                                            };
                                            let registered = matches!(
                                                p.state,
                                                PostureState::Compliant
                                                    | PostureState::InGrace { .. }
                                                    | PostureState::NonCompliant { .. }
                                            );
                                            assert!(registered, "allowed an unregistered device: {p:?}");
                                            if require == Require::CompliantDevice {
                                                let ok = match p.state {
                                                    PostureState::Compliant => true,
                                                    PostureState::InGrace { until } => {
                                                        allow_grace_period && until > NOW
                                                    }
                                                    _ => false,
                                                };
                                                assert!(ok, "allowed a device that is not compliant: {p:?} {policy:?}");
                                            }
                                            let fresh = NOW - p.as_of <= max_posture_age;
                                            assert!(
                                                fresh || on_stale == OnStale::AllowLastKnown,
                                                "allowed stale posture"
                                            );
                                            assert_eq!(d.reason == Reason::PostureStale, !fresh);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 50_000, "{checked}");
}
