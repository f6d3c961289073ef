//! Versions as oc-mirror compares them: semver (`4.20.0-rc.3`, `1.47.1-5`), with a lenient
//! fallback for the `v`-prefixed or two-part versions some catalogs carry.
//!
//! Order is semver *precedence*: build metadata (`+0.1687199951.p`) never changes it, so
//! `1.0.0-5` and `1.0.0-5+0.1687199951.p` are equal versions (as Masterminds semver, which
//! oc-mirror uses, compares them). [`Constraint`] is how oc-mirror v2 turns a catalog
//! entry's `minVersion`/`maxVersion` into a range (`>=MIN <=MAX`, Masterminds semantics);
//! [`Range`] is the plain inclusive range the update graph uses.

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

    /// Whether the version carries a pre-release part (`1.47.1-5`).
    pub fn is_prerelease(&self) -> bool {
        !self.parsed.pre.is_empty()
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Precedence: major, minor, patch, pre-release; build metadata ignored.
    fn cmp(&self, other: &Self) -> Ordering {
        self.parsed.cmp_precedence(&other.parsed)
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

    pub fn contains(&self, v: &Version) -> bool {
        self.min.as_ref().is_none_or(|m| v >= m) && self.max.as_ref().is_none_or(|m| v <= m)
    }
}

/// One bound of a [`Constraint`]: the version written, zero-filled (`1.2` → `1.2.0`), and
/// which parts were left out (Masterminds calls such a bound "dirty").
#[derive(Debug, Clone)]
struct Bound {
    version: Version,
    /// `1` or `1.x`: the minor (and patch) were not given.
    minor_open: bool,
    /// `1.2` or `1.2.x`: the patch was not given.
    patch_open: bool,
}

/// A catalog `minVersion`/`maxVersion` pair as oc-mirror v2 applies it: the Masterminds
/// constraint `>=MIN <=MAX`. Two rules differ from a plain range:
/// - a bundle version with a pre-release part matches only when MIN or MAX has one too
///   (`minVersion: 1.47.0` does not match `1.47.1-5`; `minVersion: 1.47.0-0` does);
/// - a MAX written without its patch (`1.2`) admits every patch of it (`1.2.9`).
#[derive(Debug, Clone, Default)]
pub struct Constraint {
    min: Option<Bound>,
    max: Option<Bound>,
    /// Some bound names a pre-release: pre-release versions may match.
    admits_prereleases: bool,
    /// As written, for messages (`>=1.1.0 <=1.2.0`).
    pub text: String,
}

impl Constraint {
    /// The constraint for these bounds; `None` when neither is set. A bound that is not a
    /// version (in Masterminds' loose sense: `v1`, `1.2`, `1.2.3-rc.1+b`) is an error naming
    /// `what.minVersion`/`what.maxVersion`.
    pub fn parse(min: Option<&str>, max: Option<&str>, what: &str) -> anyhow::Result<Option<Self>> {
        let bound = |s: Option<&str>, field: &str| -> anyhow::Result<Option<Bound>> {
            let Some(s) = s else { return Ok(None) };
            parse_bound(s)
                .map(Some)
                .ok_or_else(|| anyhow::anyhow!("{what}.{field}: `{s}` is not a semantic version"))
        };
        let min_b = bound(min, "minVersion")?;
        let max_b = bound(max, "maxVersion")?;
        if min_b.is_none() && max_b.is_none() {
            return Ok(None);
        }
        let admits_prereleases = min_b
            .iter()
            .chain(max_b.iter())
            .any(|b| b.version.is_prerelease());
        let text = [min.map(|m| format!(">={m}")), max.map(|m| format!("<={m}"))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Some(Constraint {
            min: min_b,
            max: max_b,
            admits_prereleases,
            text,
        }))
    }

    pub fn matches(&self, v: &Version) -> bool {
        if v.is_prerelease() && !self.admits_prereleases {
            return false;
        }
        let above_min = self.min.as_ref().is_none_or(|b| *v >= b.version);
        let below_max = self.max.as_ref().is_none_or(|b| {
            if !(b.minor_open || b.patch_open) {
                return *v <= b.version;
            }
            let (vp, bp) = (&v.parsed, &b.version.parsed);
            vp.major < bp.major || (vp.major == bp.major && (b.minor_open || vp.minor <= bp.minor))
        });
        above_min && below_max
    }
}

/// Masterminds' loose version syntax: `v?N(.N)?(.N)?(-pre)?(+build)?`, `x`/`*` wildcards in
/// the minor or patch place.
fn parse_bound(s: &str) -> Option<Bound> {
    let t = s.trim();
    let t = t.strip_prefix('v').unwrap_or(t);
    let split = t.find(['-', '+']).unwrap_or(t.len());
    let (core, rest) = t.split_at(split);
    let parts: Vec<&str> = core.split('.').collect();
    let wild = |p: &str| matches!(p, "x" | "X" | "*");
    if parts.is_empty() || parts.len() > 3 || parts[0].is_empty() || wild(parts[0]) {
        return None;
    }
    let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !numeric(parts[0]) {
        return None;
    }
    let minor_open = parts.get(1).is_none_or(|p| wild(p));
    let patch_open = minor_open || parts.get(2).is_none_or(|p| wild(p));
    let mut filled = vec![parts[0].to_string()];
    for i in 1..3 {
        match parts.get(i) {
            Some(p) if numeric(p) && !(i == 2 && minor_open) => filled.push(p.to_string()),
            Some(p) if wild(p) || (i == 2 && minor_open) => filled.push("0".into()),
            Some(_) => return None,
            None => filled.push("0".into()),
        }
    }
    let version = Version::parse(&format!("{}{rest}", filled.join(".")))?;
    Some(Bound {
        version: Version {
            raw: s.to_string(),
            ..version
        },
        minor_open,
        patch_open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn semver_order_with_prereleases() {
        assert!(v("4.20.0-rc.3") < v("4.20.0"));
        assert!(v("4.20.10") > v("4.20.9"));
        assert!(v("1.47.1-5") > v("1.47.1-1"));
        assert!(v("v0.2") == v("0.2.0"));
        assert!(Version::parse("banana").is_none());
    }

    #[test]
    fn build_metadata_never_changes_the_order() {
        let plain = v("0.8.4-5");
        let built = v("0.8.4-5+0.1687199951.p");
        assert_eq!(plain.cmp(&built), Ordering::Equal);
        assert!(built < v("0.8.4-6") && built > v("0.8.4-4"));
        let at = |min: Option<&str>, max: Option<&str>| {
            Constraint::parse(min, max, "t").unwrap().unwrap()
        };
        // Every combination keeps both, as Masterminds semver does.
        for c in [
            at(Some("0.8.4-5"), None),
            at(None, Some("0.8.4-5")),
            at(Some("0.8.4-5"), Some("0.8.4-5")),
        ] {
            assert!(c.matches(&plain) && c.matches(&built), "{}", c.text);
        }
        let r = Range::parse(Some("0.8.4-5"), Some("0.8.4-5"), "t").unwrap();
        assert!(r.contains(&plain) && r.contains(&built));
    }

    #[test]
    fn prereleases_match_only_a_constraint_that_names_one() {
        let c = Constraint::parse(Some("1.47.0"), None, "t")
            .unwrap()
            .unwrap();
        assert!(!c.matches(&v("1.47.1-5")));
        assert!(c.matches(&v("1.48.0")));
        let c = Constraint::parse(Some("1.47.0-0"), None, "t")
            .unwrap()
            .unwrap();
        assert!(c.matches(&v("1.47.1-5")));
        // Either bound naming a pre-release admits them for the pair.
        let c = Constraint::parse(Some("1.0.0"), Some("1.51.0-1"), "t")
            .unwrap()
            .unwrap();
        assert!(c.matches(&v("1.47.1-5")) && !c.matches(&v("1.51.0-2")));
    }

    #[test]
    fn a_max_without_patch_admits_every_patch() {
        let c = Constraint::parse(None, Some("1.2"), "t").unwrap().unwrap();
        assert!(c.matches(&v("1.2.9")) && c.matches(&v("0.9.0")));
        assert!(!c.matches(&v("1.3.0")));
        let c = Constraint::parse(None, Some("1"), "t").unwrap().unwrap();
        assert!(c.matches(&v("1.9.9")) && !c.matches(&v("2.0.0")));
        let c = Constraint::parse(Some("v1.2"), None, "t").unwrap().unwrap();
        assert!(c.matches(&v("1.2.0")) && !c.matches(&v("1.1.9")));
        assert!(Constraint::parse(None, None, "t").unwrap().is_none());
        let err = Constraint::parse(Some("notaversion"), None, "isc.yaml: p")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "isc.yaml: p.minVersion: `notaversion` is not a semantic version"
        );
        assert!(Constraint::parse(Some("1.2.3.4"), None, "t").is_err());
    }
}
