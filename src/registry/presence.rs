//! When a registry's answer proves that it holds a blob or a manifest.
//!
//! A `200` alone proves nothing: a captive portal, a misrouted proxy or a web server answers
//! `200 text/html` to everything. An object counts as [`Presence::Present`] only when the
//! answer's `Docker-Content-Digest` equals the digest asked for, or — where a registry omits
//! that header — its `Content-Length` equals the size the caller expects (a manifest without
//! either is fetched and its bytes hashed, see `RegistryClient::manifest_presence`). A `404`
//! is [`Presence::Absent`]. Anything else that is not a registry's answer is a
//! [`NotRegistry`] reason, which the client turns into
//! [`super::RegistryError::NotRegistry`] naming the URL and what came back.

use crate::reference::Digest;

/// Whether a registry holds an object, as its answer proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
}

impl Presence {
    pub fn is_present(self) -> bool {
        self == Presence::Present
    }
}

/// The parts of an answer that decide presence.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    /// Without parameters (`text/html`, not `text/html; charset=utf-8`); empty when absent.
    pub content_type: &'a str,
    pub docker_content_digest: Option<&'a str>,
    pub content_length: Option<u64>,
}

/// Why an answer is not a registry's answer about the object asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRegistry(pub String);

/// No registry answers an API request with an HTML page: such an answer comes from something
/// else on the way (a captive portal, a proxy's error or login page).
pub fn is_page(content_type: &str) -> bool {
    let t = content_type.to_ascii_lowercase();
    t.starts_with("text/html") || t.starts_with("application/xhtml")
}

/// Presence of `asked` by a HEAD or GET answer, with the size the caller expects if it knows it.
/// Statuses other than 2xx and 404 are not decided here (the caller reports them as errors).
pub fn decide(
    answer: &Answer<'_>,
    asked: &Digest,
    expected_size: Option<u64>,
) -> Result<Presence, NotRegistry> {
    if answer.status == 404 {
        return Ok(Presence::Absent);
    }
    if is_page(answer.content_type) {
        return Err(NotRegistry(format!(
            "a `{}` page, not a registry answer",
            answer.content_type
        )));
    }
    if let Some(header) = answer.docker_content_digest {
        return if header.trim() == asked.as_str() {
            Ok(Presence::Present)
        } else {
            Err(NotRegistry(format!(
                "Docker-Content-Digest is `{}`, not the digest asked for",
                header.trim()
            )))
        };
    }
    match (expected_size, answer.content_length) {
        (Some(want), Some(got)) if want == got => Ok(Presence::Present),
        (Some(want), got) => Err(NotRegistry(format!(
            "no Docker-Content-Digest, and Content-Length {} is not the expected {want} bytes",
            got.map_or("absent".to_string(), |g| g.to_string())
        ))),
        (None, _) => Err(NotRegistry(
            "no Docker-Content-Digest and no expected size to check the answer against".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer<'a>(
        status: u16,
        content_type: &'a str,
        digest: Option<&'a str>,
        len: Option<u64>,
    ) -> Answer<'a> {
        Answer {
            status,
            content_type,
            docker_content_digest: digest,
            content_length: len,
        }
    }

    #[test]
    fn only_a_matching_digest_or_size_proves_presence() {
        let d = Digest::sha256_of(b"layer");
        let other = Digest::sha256_of(b"other");
        let ok = "application/octet-stream";
        // The digest header decides, whatever the size.
        assert_eq!(
            decide(&answer(200, ok, Some(d.as_str()), Some(1)), &d, Some(5)),
            Ok(Presence::Present)
        );
        assert!(decide(&answer(200, ok, Some(other.as_str()), Some(5)), &d, Some(5)).is_err());
        // Without it, the expected size must match.
        assert_eq!(
            decide(&answer(200, ok, None, Some(5)), &d, Some(5)),
            Ok(Presence::Present)
        );
        assert!(decide(&answer(200, ok, None, Some(67)), &d, Some(5)).is_err());
        assert!(decide(&answer(200, ok, None, None), &d, Some(5)).is_err());
        assert!(decide(&answer(200, ok, None, Some(5)), &d, None).is_err());
        // 404 is absent; an HTML page is never a registry answer, even with a size that fits.
        assert_eq!(
            decide(&answer(404, "", None, None), &d, Some(5)),
            Ok(Presence::Absent)
        );
        let e = decide(&answer(200, "text/html", None, Some(67)), &d, Some(67)).unwrap_err();
        assert!(e.0.contains("text/html"), "{e:?}");
        assert!(decide(&answer(200, "text/html", Some(d.as_str()), None), &d, None).is_err());
    }
}
