//! Kubernetes object names: DNS-1123 labels (≤ 63 characters of `[a-z0-9-]`, starting and
//! ending alphanumeric), derived from image references so a rerun names things the same way.

use sha2::{Digest as _, Sha256};

/// The longest DNS-1123 label.
pub const MAX_LABEL: usize = 63;

/// `parts` joined with `-` as a DNS-1123 label: lowercased, every other character mapped to
/// `-`, runs of `-` collapsed, trimmed. A name longer than 63 characters keeps its start and
/// ends in 8 hex digits of the sha256 of the whole, so two long names still differ.
pub fn label(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_end_matches('-').to_string();
    if out.len() <= MAX_LABEL {
        return if out.is_empty() { "x".into() } else { out };
    }
    let hash = hex::encode(Sha256::digest(joined.as_bytes()));
    let head = out[..MAX_LABEL - 9].trim_end_matches('-');
    format!("{head}-{}", &hash[..8])
}

/// Whether `s` is a DNS-1123 label.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_dns_1123_and_stable() {
        assert_eq!(
            label(&["cs", "redhat-operator-index", "v4.20"]),
            "cs-redhat-operator-index-v4-20"
        );
        assert_eq!(
            label(&["prewarm", "Mirror.Example:8443/ocp/"]),
            "prewarm-mirror-example-8443-ocp"
        );
        let long = label(&["cs", &"a".repeat(80), "v1"]);
        assert!(is_label(&long) && long.len() == MAX_LABEL, "{long}");
        assert_ne!(long, label(&["cs", &"a".repeat(80), "v2"]));
        assert_eq!(label(&["--"]), "x");
        for s in ["a-b", "cs-x-0"] {
            assert!(is_label(s));
        }
        for s in ["-a", "a-", "A", "a.b", ""] {
            assert!(!is_label(s), "{s}");
        }
    }
}
