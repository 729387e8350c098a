//! The access decision on the request path, with no proxy framework in it: the data plane
//! reads a request once into a [`RequestInfo`], and gets back either "forward" (with the
//! [`Verdict`] that the identity headers and the decision log use) or a [`Reply`] to write. The
//! data plane writes every response; nothing here touches a socket. Explain ("What If") runs
//! the same code without a request.
//!
//! Owns: finding and checking the credential ([`auth`]), browser sign-in and sign-out
//! replies, the group check, device identification and posture look-up through `device`, the
//! call to the pure `policy::decide`, the landing answer through `landing`, the routing table
//! ([`routing`], [`Route`]) and the signed identity assertion ([`assertion`]).
//!
//! May depend on `policy`, `base`, `config` (typed values), `metrics`, `identity`, `device`,
//! `landing` and `store` (its read traits and error type; every read under a timeout). Never on
//! `proxy`, `sync`, `admin` or a store backend.

pub mod assertion;
pub mod auth;
mod decide;
pub mod explain;
pub mod grace;
mod identity_headers;
pub mod live;
mod reply;
mod request;
mod routes;
pub mod routing;
pub mod upstream_headers;

pub use decide::{refused_token, refused_token_detail, Access, Early, PostureLookup, Subject, Verdict};
pub use identity_headers::{identity_values, HeaderMemo};
pub use reply::{is_navigation, wants_page, Problem, Rendered, Reply};
pub use request::{host_of, RequestInfo};
pub use routes::{Route, RouteTable};
