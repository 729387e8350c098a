//! National clouds: the hosts and issuer forms each Microsoft cloud uses, in one table
//! (reference/entra-intune-jamf.md §2). Pure data; depends on nothing.

use std::fmt;
use std::str::FromStr;

/// The Microsoft-account (consumer) tenant, never accepted by a corporate gateway.
pub const CONSUMER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// A Microsoft cloud an Entra tenant lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NationalCloud {
    /// Worldwide, including Microsoft 365 GCC ("moderate").
    Global,
    /// US Government GCC High (Graph "L4").
    UsGovHigh,
    /// US Government DoD (Graph "L5").
    UsGovDod,
    /// China, operated by 21Vianet.
    China,
}

/// The endpoints of one cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloudHosts {
    /// Entra sign-in authority host, e.g. `login.microsoftonline.com`.
    pub login: &'static str,
    /// Microsoft Graph host, e.g. `graph.microsoft.com`.
    pub graph: &'static str,
    /// Host in v1.0 token issuers (`https://{host}/{tid}/`). Outside the global cloud this
    /// is not documented; production reads it from the v1 discovery document.
    pub v1_issuer: &'static str,
}

impl NationalCloud {
    pub const ALL: [Self; 4] = [Self::Global, Self::UsGovHigh, Self::UsGovDod, Self::China];

    pub fn hosts(self) -> CloudHosts {
        match self {
            Self::Global => CloudHosts {
                login: "login.microsoftonline.com",
                graph: "graph.microsoft.com",
                v1_issuer: "sts.windows.net",
            },
            Self::UsGovHigh => CloudHosts {
                login: "login.microsoftonline.us",
                graph: "graph.microsoft.us",
                v1_issuer: "sts.windows.net",
            },
            Self::UsGovDod => CloudHosts {
                login: "login.microsoftonline.us",
                graph: "dod-graph.microsoft.us",
                v1_issuer: "sts.windows.net",
            },
            Self::China => CloudHosts {
                login: "login.partner.microsoftonline.cn",
                graph: "microsoftgraph.chinacloudapi.cn",
                v1_issuer: "sts.chinacloudapi.cn",
            },
        }
    }

    /// The name used in configuration files and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::UsGovHigh => "us_gov_high",
            Self::UsGovDod => "us_gov_dod",
            Self::China => "china",
        }
    }

    /// The app-only scope for Microsoft Graph in this cloud.
    pub fn graph_scope(self) -> String {
        format!("https://{}/.default", self.hosts().graph)
    }
}

impl fmt::Display for NationalCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NationalCloud {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace(['-', ' '], "_").as_str() {
            "global" | "public" | "worldwide" | "gcc" => Ok(Self::Global),
            "us_gov_high" | "usgovhigh" | "gcc_high" | "l4" => Ok(Self::UsGovHigh),
            "us_gov_dod" | "usgovdod" | "dod" | "l5" => Ok(Self::UsGovDod),
            "china" | "21vianet" => Ok(Self::China),
            "germany" | "de" => Err(format!(
                "{s:?}: Microsoft Cloud Deutschland closed on 2021-10-29; German tenants moved to the global cloud (\"global\")"
            )),
            _ => Err(format!("{s:?} is not a national cloud (global, us_gov_high, us_gov_dod, china)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_germany_is_refused() {
        for c in NationalCloud::ALL {
            assert_eq!(c.as_str().parse::<NationalCloud>().unwrap(), c);
        }
        assert_eq!("GCC High".parse::<NationalCloud>().unwrap(), NationalCloud::UsGovHigh);
        let e = "Germany".parse::<NationalCloud>().unwrap_err();
        assert!(e.contains("closed") && e.contains("2021"), "{e}");
        assert!("mars".parse::<NationalCloud>().is_err());
        assert_eq!(
            NationalCloud::UsGovDod.graph_scope(),
            "https://dod-graph.microsoft.us/.default"
        );
        assert_eq!(NationalCloud::Global.hosts().login, "login.microsoftonline.com");
    }
}
