//! Which tags a refresh never re-checks upstream: the job's `refresh.immutable` list.
//!
//! Each entry is either `semver` — any tag that is a full `MAJOR.MINOR.PATCH` version, with an
//! optional leading `v` and optional `-pre-release`/`+build` suffix (`4.20.16`, `v1.2.3`,
//! `4.20.0-multi`, `4.20.16-x86_64` — `_` allowed in the suffix as tags use it; not `4.20`,
//! `latest`) — or a glob matched against the
//! whole reference without its digest (`quay.io/openshift-release-dev/ocp-release:4.*`), where
//! `*` is any run of characters (`/` and `:` included) and `?` any one character. References
//! by digest are never re-checked whatever the rules say: a digest cannot move.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::reference::Reference;

/// `refresh:` in the job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRules {
    /// Tags never re-checked once their digest is known.
    #[serde(default)]
    pub immutable: Vec<Rule>,
}

impl RefreshRules {
    /// The rule that makes `reference`'s tag immutable, if any.
    pub fn immutable(&self, reference: &Reference) -> Option<&Rule> {
        let tag = reference.tag()?;
        let text = format!("{}:{tag}", reference.repo_path());
        self.immutable.iter().find(|r| r.matches(&text, tag))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Rule {
    Semver,
    Glob(String),
}

impl Rule {
    fn matches(&self, reference: &str, tag: &str) -> bool {
        match self {
            Rule::Semver => is_semver(tag),
            Rule::Glob(g) => glob(g.as_bytes(), reference.as_bytes()),
        }
    }
}

impl TryFrom<String> for Rule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "semver" {
            return Ok(Rule::Semver);
        }
        if s.is_empty() {
            return Err("an empty pattern matches nothing; use `semver` or a glob such as `quay.io/org/repo:4.*`".into());
        }
        if s.contains('@') {
            return Err(format!(
                "`{s}`: references by digest are never re-checked; a rule names tags (`repo:tag`, globs allowed)"
            ));
        }
        if !s.contains(':') && !s.ends_with('*') {
            return Err(format!(
                "`{s}` names no tag: write `{s}:*` for every tag of it, or `semver`"
            ));
        }
        Ok(Rule::Glob(s))
    }
}

impl From<Rule> for String {
    fn from(r: Rule) -> String {
        r.to_string()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Semver => f.write_str("semver"),
            Rule::Glob(g) => f.write_str(g),
        }
    }
}

/// A full semantic version (semver.org 2.0 shape), with an optional `v`; `_` is allowed in
/// the suffix because OCI tags use it (`4.20.16-x86_64`).
pub fn is_semver(tag: &str) -> bool {
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let (core, _build) = tag.split_once('+').unwrap_or((tag, ""));
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let numeric = |n: &&str| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n.len() == 1 || !n.starts_with('0'))
    };
    let ident = |p: &str| {
        !p.is_empty()
            && p.split('.').all(|i| {
                !i.is_empty()
                    && i.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    numbers.len() == 3
        && numbers.iter().all(numeric)
        && pre.is_none_or(ident)
        && (!tag.contains('+') || ident(_build))
}

/// `*` any run (possibly empty), `?` any one byte, everything else literal.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> RefreshRules {
        RefreshRules {
            immutable: list
                .iter()
                .map(|s| Rule::try_from(s.to_string()).unwrap())
                .collect(),
        }
    }

    #[test]
    fn semver_means_full_versions_only() {
        for t in [
            "4.20.16",
            "v1.2.3",
            "4.20.0-multi",
            "4.20.16-x86_64",
            "1.0.0+b.1",
            "0.0.0",
        ] {
            assert!(is_semver(t), "{t}");
        }
        for t in [
            "4.20", "v4.20", "latest", "4.20.x", "01.2.3", "1.2.3-", "1.2.3.4", "",
        ] {
            assert!(!is_semver(t), "{t}");
        }
    }

    #[test]
    fn globs_match_the_whole_reference() {
        let r = rules(&["quay.io/openshift-release-dev/ocp-release:4.*"]);
        let yes: Reference = "quay.io/openshift-release-dev/ocp-release:4.20.16-x86_64"
            .parse()
            .unwrap();
        let no: Reference = "quay.io/openshift-release-dev/ocp-v4.0-art-dev:4.20"
            .parse()
            .unwrap();
        assert!(r.immutable(&yes).is_some());
        assert!(r.immutable(&no).is_none());
        let by_digest: Reference =
            format!("quay.io/a/b@{}", crate::reference::Digest::sha256_of(b"x"))
                .parse()
                .unwrap();
        assert!(r.immutable(&by_digest).is_none(), "no tag, no rule");
        assert!(glob(b"a*c?e", b"abbbcde"));
        assert!(!glob(b"a*c?e", b"abbbce"));
        assert!(glob(b"*", b""));
        let semver = rules(&["semver"]);
        assert!(semver.immutable(&yes).is_some());
        assert!(semver.immutable(&no).is_none());
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        assert!(Rule::try_from("quay.io/a/b".to_string())
            .unwrap_err()
            .contains("names no tag"));
        assert!(Rule::try_from("quay.io/a/b@sha256:00".to_string())
            .unwrap_err()
            .contains("by digest"));
        let job = crate::job::Job::parse(
            "refresh:\n  immutable: [semver, 'quay.io/a/b']\n",
            std::path::Path::new("job.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(job.starts_with("job.yaml: refresh.immutable[1]: "), "{job}");
    }
}
