//! Versions as oc-mirror compares them: semver (`4.20.0-rc.3`, `1.47.1-5`), with a lenient
//! fallback for the `v`-prefixed or two-part versions some catalogs carry.

use std::cmp::Ordering;

/// A parsed version; `raw` is kept for messages.
#[derive(Debug, Clone)]
pub struct Version {
    pub raw: String,
    parsed: semver::Version,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let t = s.trim().trim_start_matches('v');
        let parsed = semver::Version::parse(t).ok().or_else(|| {
            // `1.2` → `1.2.0`, keeping any pre-release/build suffix.
            let split = t.find(['-', '+']).unwrap_or(t.len());
            let (core, rest) = t.split_at(split);
            match core.split('.').count() {
                1 => semver::Version::parse(&format!("{core}.0.0{rest}")).ok(),
                2 => semver::Version::parse(&format!("{core}.0{rest}")).ok(),
                _ => None,
            }
        })?;
        Some(Version {
            raw: s.to_string(),
            parsed,
        })
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.parsed == other.parsed
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parsed.cmp(&other.parsed)
    }
}

/// An inclusive range; an absent bound is open.
#[derive(Debug, Clone, Default)]
pub struct Range {
    pub min: Option<Version>,
    pub max: Option<Version>,
}

impl Range {
    /// Parse optional bounds; `what` names the field in the error.
    pub fn parse(min: Option<&str>, max: Option<&str>, what: &str) -> anyhow::Result<Range> {
        let one = |v: Option<&str>, field: &str| -> anyhow::Result<Option<Version>> {
            match v {
                None => Ok(None),
                Some(s) => Version::parse(s)
                    .map(Some)
                    .ok_or_else(|| anyhow::anyhow!("{what}.{field}: `{s}` is not a version")),
            }
        };
        Ok(Range {
            min: one(min, "minVersion")?,
            max: one(max, "maxVersion")?,
        })
    }

    pub fn is_set(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }

    pub fn contains(&self, v: &Version) -> bool {
        self.min.as_ref().is_none_or(|m| v >= m) && self.max.as_ref().is_none_or(|m| v <= m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_order_with_prereleases() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("4.20.0-rc.3") < v("4.20.0"));
        assert!(v("4.20.10") > v("4.20.9"));
        assert!(v("1.47.1-5") > v("1.47.1-1"));
        assert!(v("v0.2") == v("0.2.0"));
        assert!(Version::parse("banana").is_none());
    }
}
