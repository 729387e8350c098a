//! Why a token was refused. Every variant becomes a 401 with `error="invalid_token"`; the
//! variant is logged (never the token) so that an admin can tell what went wrong.

/// A refused token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("token is larger than the accepted maximum")]
    TooLarge,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm {0} is not accepted (RS256 only)")]
    Algorithm(String),
    #[error("token has no key id (kid)")]
    NoKeyId,
    #[error("no signing key with this key id for the tenant")]
    UnknownKey,
    #[error("signature does not verify")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not this application")]
    Audience,
    #[error("token issuer does not match its version and tenant")]
    Issuer,
    #[error("signing key is not valid for this issuer")]
    KeyIssuer,
    #[error("tenant is not a GUID")]
    TenantFormat,
    #[error("consumer (Microsoft account) tenant is not accepted")]
    ConsumerTenant,
    #[error("tenant is not allowed")]
    TenantNotAllowed,
    #[error("token version {0:?} is not supported")]
    Version(String),
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("ID token nonce does not match the sign-in request")]
    Nonce,
    /// No `scp`: an app-only (client credentials) token, or an ID token, sent as a user's
    /// bearer token.
    #[error("token is not a user's delegated access token (no scp claim)")]
    NotDelegated,
}

impl TokenError {
    /// A stable reason code: `unauthenticated` when there was nothing to check, else
    /// `token_invalid` (DESIGN.md §2).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "unauthenticated",
            Self::TooLarge
            | Self::Malformed
            | Self::Algorithm(_)
            | Self::NoKeyId
            | Self::UnknownKey
            | Self::Signature
            | Self::Expired
            | Self::NotYetValid
            | Self::Audience
            | Self::Issuer
            | Self::KeyIssuer
            | Self::TenantFormat
            | Self::ConsumerTenant
            | Self::TenantNotAllowed
            | Self::Version(_)
            | Self::MissingClaim(_)
            | Self::Nonce
            | Self::NotDelegated => "token_invalid",
        }
    }
}
