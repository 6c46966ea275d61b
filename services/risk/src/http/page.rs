//! `GET /`: the operator's page (the live alert feed, the rules and their editor, and the
//! reconciliation section, read through risk's `/reconciliation*` proxy), one HTML file
//! compiled into the binary. Its Content-Security-Policy allows the page's own inline `<style>`
//! and `<script>` by their SHA-256 and nothing else from anywhere: no other script, no inline
//! attribute handler, no request to another origin (the stream and the API are same-origin).

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The page, as served.
pub const PAGE: &str = include_str!("../../page/index.html");

/// The policy for [`PAGE`], computed once from its inline blocks.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = content_security_policy(PAGE);
    // Hashes are base64 and the rest is ASCII: a valid header value by construction.
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// The page, with a policy that lets it run and do nothing else.
pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, POLICY.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The token never travels in the page's URL for long (it is moved to session
            // storage), but the page is tiny: never keep a copy anywhere.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        PAGE,
    )
        .into_response()
}

/// `default-src 'none'` plus exactly what `html` needs: its `<script>` and `<style>` blocks by
/// hash, same-origin fetches and the stream, and the `data:` favicon.
pub fn content_security_policy(html: &str) -> String {
    let hashes = |tag: &str| {
        inline_blocks(html, tag)
            .map(|block| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(block))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes("script"),
        hashes("style"),
    )
}

/// The contents of every `<tag>...</tag>` block in `html` (written without attributes, as the
/// page writes them), exactly as the browser hashes them.
fn inline_blocks<'h>(html: &'h str, tag: &str) -> impl Iterator<Item = &'h str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = html;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let length = rest[start..].find(&close)?;
        let block = &rest[start..start + length];
        rest = &rest[start + length + close.len()..];
        Some(block)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_page_has_exactly_one_inline_script_and_one_inline_style() {
        assert_eq!(inline_blocks(PAGE, "script").count(), 1);
        assert_eq!(inline_blocks(PAGE, "style").count(), 1);
        // Anything else would be blocked by the policy, or escape the hashing above.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(!PAGE.contains(" style=\""), "no inline style attributes");
        assert!(!PAGE.contains(" onclick=\""), "no inline handlers");
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "nothing remote"
        );
    }

    #[test]
    fn the_policy_names_the_hash_of_each_block() {
        let html = "<style>a{}</style><script>1</script>";
        let policy = content_security_policy(html);
        // echo -n '1' | openssl dgst -sha256 -binary | base64
        assert!(
            policy.contains("script-src 'sha256-a4ayc/80/OGda4BO/1o/V0etpOqiLx1JwB5S3beHW0s='"),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
    }
}
