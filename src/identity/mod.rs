//! Identity: Entra ID token validation against per-tenant signing keys (JWKS), producing a
//! verified [`Principal`]. Browser sign-in, sessions and group overage build on this.
//!
//! May depend on `cloud`; never on `proxy`, `admin`, `store` or `sync`. The request path
//! calls [`Validator::validate`], which needs no lock and, for a known key, no I/O.

mod error;
mod jwks;
mod principal;
mod validate;

pub use error::TokenError;
pub use jwks::{Jwks, JwksError, KeySet, TenantKeys};
pub use principal::{Principal, TokenVersion};
pub use validate::{Validator, ValidatorConfig, CONSUMER_TENANT};
