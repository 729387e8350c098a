//! The console's stylesheet and script, embedded in the binary and served under names that
//! carry their content's hash (`console.3f2a….css`), so browsers may keep them forever and a
//! new version is a new name.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const FILES: [(&str, &str, &str); 2] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("static/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("static/console.js"),
    ),
];

struct Asset {
    /// `console.css` → `console.<hash>.css`.
    served_as: String,
    content_type: &'static str,
    body: &'static str,
}

fn all() -> &'static [Asset] {
    static ALL: OnceLock<Vec<Asset>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, content_type, body)| {
                let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
                let hash: String = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
                let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
                Asset {
                    served_as: format!("{stem}.{hash}.{ext}"),
                    content_type,
                    body,
                }
            })
            .collect()
    })
}

/// The URL of asset `name` (`console.css`), for the templates.
pub fn url(name: &str) -> String {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    all()
        .iter()
        .find(|a| a.served_as.starts_with(&format!("{stem}.")) && a.served_as.ends_with(&format!(".{ext}")))
        .map(|a| format!("/console/assets/{}", a.served_as))
        .unwrap_or_default()
}

pub async fn serve(Path(name): Path<String>) -> Response {
    match all().iter().find(|a| a.served_as == name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_named_by_their_content() {
        let css = super::url("console.css");
        assert!(
            css.starts_with("/console/assets/console.") && css.ends_with(".css"),
            "{css}"
        );
        assert_eq!(css.len(), "/console/assets/console.".len() + 12 + ".css".len());
        assert_ne!(super::url("console.js"), css);
    }
}
