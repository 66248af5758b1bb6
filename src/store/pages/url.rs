//! URL validation and normalization, applied identically to every URL the gateway stores.
//!
//! Rules (also in the README):
//! 1. Surrounding whitespace is trimmed; the input may be at most 2,048 characters.
//! 2. It must be an absolute `http` or `https` URL with a host, and carry no user name or password.
//! 3. It is parsed and re-serialized by the WHATWG URL standard: scheme and host are lower-cased,
//!    a default port (80/443) is dropped, `.`/`..` path segments are resolved, characters that
//!    need it are percent-encoded, and an empty path becomes `/`.
//! 4. The fragment (`#…`) is removed: it never names a different page.
//! 5. The query string is kept as given, and the result may be at most 2,048 characters.

use url::Url;

pub const MAX_URL_LEN: usize = 2048;

/// The normalized form of `raw`, or a message saying what is wrong with it.
pub fn normalize_url(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("URL must not be empty".into());
    }
    if s.len() > MAX_URL_LEN {
        return Err(format!("URL is longer than {MAX_URL_LEN} characters"));
    }
    let mut url = Url::parse(s).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "URL scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL must have a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not contain credentials".into());
    }
    url.set_fragment(None);
    let out: String = url.into();
    if out.len() > MAX_URL_LEN {
        return Err(format!(
            "URL is longer than {MAX_URL_LEN} characters once normalized"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::normalize_url;

    #[test]
    fn normalizes_the_same_way_every_time() {
        for (raw, want) in [
            ("  HTTPS://Example.COM  ", "https://example.com/"),
            ("http://example.com:80/a/./b/../c", "http://example.com/a/c"),
            (
                "https://example.com:443/x?q=1#frag",
                "https://example.com/x?q=1",
            ),
            (
                "https://example.com:8443/ä b",
                "https://example.com:8443/%C3%A4%20b",
            ),
            ("https://example.com/a/", "https://example.com/a/"),
        ] {
            assert_eq!(normalize_url(raw).as_deref(), Ok(want), "{raw}");
            assert_eq!(
                normalize_url(want).as_deref(),
                Ok(want),
                "normalizing twice changes {want}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_a_web_page() {
        for raw in [
            "",
            "   ",
            "/relative/path",
            "example.com/no-scheme",
            "ftp://example.com/file",
            "javascript:alert(1)",
            "mailto:a@example.com",
            "https://user:pw@example.com/",
            "http://",
        ] {
            assert!(normalize_url(raw).is_err(), "accepted {raw:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(normalize_url(&long).is_err());
    }
}
