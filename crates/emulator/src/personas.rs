//! The demo tenant and its people (DESIGN.md §8), shared by the Entra, Graph and (later)
//! Jamf emulators so that ids line up everywhere.

/// The emulated tenant.
pub const TENANT_ID: &str = "7d3c5b0e-2f41-4c9a-9b8e-5a1e3f6c2d10";
/// Its verified domain.
pub const TENANT_DOMAIN: &str = "contoso.test";
/// The gateway's app registration in the emulated tenant.
pub const GATEWAY_CLIENT_ID: &str = "5f0c8a9e-3b2d-4e6f-8a1c-9d7e6b5a4c3f";
/// Its client secret (the demo's only secret, printed by `portcullis demo`).
pub const GATEWAY_CLIENT_SECRET: &str = "portcullis-demo-secret";
/// Its App ID URI (an accepted audience of v1 tokens).
pub const GATEWAY_APP_ID_URI: &str = "api://portcullis-demo";
/// Another organisation's tenant whose users may be let in (`entra.allowed_tenants`): it has
/// no apps or people here, only the signing keys Entra publishes for every tenant.
pub const PARTNER_TENANT_ID: &str = "4b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
/// The Microsoft-account tenant, for tests that check it is refused.
pub const CONSUMER_TENANT_FOR_TESTS: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
/// Group every persona is in.
pub const GROUP_ALL_STAFF: &str = "6a000000-0000-4000-8000-000000000001";
/// Group of alice, erin and olivia.
pub const GROUP_ENGINEERING: &str = "6a000000-0000-4000-8000-000000000002";

/// One user with (at most) one Mac.
#[derive(Debug, Clone)]
pub struct Persona {
    pub name: &'static str,
    pub display_name: &'static str,
    pub object_id: &'static str,
    /// Entra `deviceId` of the persona's Mac when it is registered with Entra.
    pub device_id: Option<&'static str>,
    pub groups: Vec<String>,
    pub summary: &'static str,
}

impl Persona {
    pub fn upn(&self) -> String {
        format!("{}@{TENANT_DOMAIN}", self.name)
    }
}

/// Every persona: the five of DESIGN.md §8 plus `olivia`, who is in 250 groups (overage).
pub fn all() -> Vec<Persona> {
    let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut olivia_groups = g(&[GROUP_ALL_STAFF, GROUP_ENGINEERING]);
    olivia_groups.extend((3..=250).map(|i| format!("6a000000-0000-4000-8000-{i:012x}")));
    vec![
        Persona {
            name: "alice",
            display_name: "Alice Adams",
            object_id: "a1000000-0000-4000-8000-000000000001",
            device_id: Some("d1000000-0000-4000-8000-00000000000a"),
            groups: g(&[GROUP_ALL_STAFF, GROUP_ENGINEERING]),
            summary: "Jamf-managed Mac, registered, compliant",
        },
        Persona {
            name: "bob",
            display_name: "Bob Brown",
            object_id: "a1000000-0000-4000-8000-000000000002",
            device_id: Some("d1000000-0000-4000-8000-00000000000b"),
            groups: g(&[GROUP_ALL_STAFF]),
            summary: "Jamf-managed Mac, registered, not compliant",
        },
        Persona {
            name: "carol",
            display_name: "Carol Clark",
            object_id: "a1000000-0000-4000-8000-000000000003",
            device_id: None,
            groups: g(&[GROUP_ALL_STAFF]),
            summary: "Jamf-managed Mac, not registered with Entra",
        },
        Persona {
            name: "dave",
            display_name: "Dave Davis",
            object_id: "a1000000-0000-4000-8000-000000000004",
            device_id: None,
            groups: g(&[GROUP_ALL_STAFF]),
            summary: "Mac not managed by Jamf, not registered",
        },
        Persona {
            name: "erin",
            display_name: "Erin Evans",
            object_id: "a1000000-0000-4000-8000-000000000005",
            device_id: Some("d1000000-0000-4000-8000-00000000000e"),
            groups: g(&[GROUP_ALL_STAFF, GROUP_ENGINEERING]),
            summary: "registered Mac in Intune's grace period",
        },
        Persona {
            name: "olivia",
            display_name: "Olivia Owens",
            object_id: "a1000000-0000-4000-8000-000000000006",
            device_id: Some("d1000000-0000-4000-8000-00000000000f"),
            groups: olivia_groups,
            summary: "member of 250 groups (token group overage)",
        },
    ]
}

pub fn find(name: &str) -> Option<Persona> {
    all().into_iter().find(|p| p.name.eq_ignore_ascii_case(name))
}
