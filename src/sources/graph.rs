//! The update graph (Cincinnati): which releases of a channel to take.
//!
//! Selection as oc-mirror does it (FORMATS.md): no bounds → the highest version only;
//! `full` → every node from `minVersion` (or the lowest) to `maxVersion` (or the highest);
//! `minVersion` and/or `maxVersion` → every node in the inclusive range (a lone `maxVersion`
//! means just that version, as oc-mirror's missing minimum defaults to the maximum);
//! `shortestPath` → the nodes of a breadth-first shortest path over the unconditional edges
//! from the minimum (or lowest) to the maximum (or highest). Conditional edges never select
//! anything; their risks are reported for every edge that touches a selected node.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::job::{Job, Platforms};
use crate::reference::Reference;

use super::version::{Range, Version};
use super::ChannelSpec;

/// The public OpenShift update service.
pub const DEFAULT_GRAPH_URL: &str = "https://api.openshift.com/api/upgrades_info/v1/graph";

#[derive(Debug, Clone, Deserialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<[usize; 2]>,
    #[serde(default, rename = "conditionalEdges")]
    pub conditional_edges: Vec<ConditionalEdges>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Node {
    pub version: String,
    pub payload: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConditionalEdges {
    pub edges: Vec<ConditionalEdge>,
    #[serde(default)]
    pub risks: Vec<Risk>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConditionalEdge {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Risk {
    #[serde(default)]
    pub url: String,
    pub name: String,
    #[serde(default)]
    pub message: String,
}

/// Parse a graph document; `what` names it (file or URL) in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<Graph> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let g: Graph = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("{what}: {path}: {}", e.into_inner())
    })?;
    for (i, n) in g.nodes.iter().enumerate() {
        if Version::parse(&n.version).is_none() {
            bail!(
                "{what}: nodes[{i}].version: `{}` is not a version",
                n.version
            );
        }
        n.payload
            .parse::<Reference>()
            .map_err(|e| anyhow::anyhow!("{what}: nodes[{i}].payload: {e}"))?;
    }
    for (i, [a, b]) in g.edges.iter().enumerate() {
        if *a >= g.nodes.len() || *b >= g.nodes.len() {
            bail!(
                "{what}: edges[{i}]: [{a}, {b}] points past the {} nodes",
                g.nodes.len()
            );
        }
    }
    Ok(g)
}

/// What one channel contributes: node indexes (ascending by version) and risk notes.
#[derive(Debug, Default)]
pub struct Selection {
    pub nodes: Vec<usize>,
    pub risks: Vec<String>,
}

/// Select nodes of `g` for `spec`; `what` names the channel entry in errors.
pub fn select(g: &Graph, spec: &ChannelSpec, what: &str) -> Result<Selection> {
    if g.nodes.is_empty() {
        bail!("{what}: channel `{}` has no releases", spec.name);
    }
    let versions: Vec<Version> = g
        .nodes
        .iter()
        .map(|n| Version::parse(&n.version).expect("checked by parse"))
        .collect();
    let mut order: Vec<usize> = (0..g.nodes.len()).collect();
    order.sort_by(|a, b| versions[*a].cmp(&versions[*b]));
    let (lowest, highest) = (order[0], order[order.len() - 1]);
    let range = Range::parse(
        spec.min_version.as_deref(),
        spec.max_version.as_deref(),
        what,
    )?;
    let find = |v: &Version, field: &str| -> Result<usize> {
        order
            .iter()
            .copied()
            .find(|i| versions[*i] == *v)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{what}.{field}: {} is not in channel `{}`",
                    v.raw,
                    spec.name
                )
            })
    };
    let nodes: Vec<usize> = if spec.shortest_path {
        let from = match &range.min {
            Some(v) => find(v, "minVersion")?,
            None => lowest,
        };
        let to = match &range.max {
            Some(v) => find(v, "maxVersion")?,
            None => highest,
        };
        shortest_path(g, from, to).ok_or_else(|| {
            anyhow::anyhow!(
                "{what}: no upgrade path from {} to {} in channel `{}`",
                g.nodes[from].version,
                g.nodes[to].version,
                spec.name
            )
        })?
    } else if spec.full || range.min.is_some() {
        order
            .iter()
            .copied()
            .filter(|i| range.contains(&versions[*i]))
            .collect()
    } else if let Some(max) = &range.max {
        vec![find(max, "maxVersion")?]
    } else {
        vec![highest]
    };
    if nodes.is_empty() {
        bail!(
            "{what}: no release of channel `{}` is in the range",
            spec.name
        );
    }
    let mut risks = Vec::new();
    let chosen: std::collections::HashSet<&str> =
        nodes.iter().map(|i| g.nodes[*i].version.as_str()).collect();
    for ce in &g.conditional_edges {
        for e in &ce.edges {
            if chosen.contains(e.from.as_str()) || chosen.contains(e.to.as_str()) {
                for r in &ce.risks {
                    risks.push(format!(
                        "channel {}: conditional update {} -> {} carries risk {}: {} {}",
                        spec.name,
                        e.from,
                        e.to,
                        r.name,
                        r.message.trim(),
                        r.url
                    ));
                }
            }
        }
    }
    Ok(Selection { nodes, risks })
}

/// Breadth-first search over the unconditional edges; the path's nodes, `from` first.
fn shortest_path(g: &Graph, from: usize, to: usize) -> Option<Vec<usize>> {
    let mut prev = vec![usize::MAX; g.nodes.len()];
    let mut adj = vec![Vec::new(); g.nodes.len()];
    for [a, b] in &g.edges {
        adj[*a].push(*b);
    }
    // Deterministic: lower version first among equals in distance.
    for list in &mut adj {
        list.sort_by(|a, b| {
            Version::parse(&g.nodes[*a].version).cmp(&Version::parse(&g.nodes[*b].version))
        });
    }
    let mut queue = VecDeque::from([from]);
    prev[from] = from;
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![to];
            let mut cur = to;
            while cur != from {
                cur = prev[cur];
                path.push(cur);
            }
            path.reverse();
            return Some(path);
        }
        for &m in &adj[n] {
            if prev[m] == usize::MAX {
                prev[m] = n;
                queue.push_back(m);
            }
        }
    }
    None
}

/// The graph's architecture names for the job's platforms (`multi` for `all`).
pub fn graph_arches(platforms: &Platforms) -> Vec<String> {
    match platforms {
        Platforms::All => vec!["multi".into()],
        Platforms::List(list) => {
            let mut out: Vec<String> = list
                .iter()
                .filter(|p| p.os == "linux")
                .map(|p| p.architecture.clone())
                .collect();
            out.dedup();
            out
        }
    }
}

/// Read the graph of `channel` for `arch` from the job's graph source.
pub async fn load(job: &Job, channel: &str, arch: &str) -> Result<(Graph, String)> {
    let cfg = job.graph.clone().unwrap_or_default();
    if let Some(file) = &cfg.file {
        let path = job.relative(file);
        return Ok((read_file(&path)?, path.display().to_string()));
    }
    if let Some(dir) = &cfg.dir {
        let path = job
            .relative(dir)
            .join(format!("graph-{channel}-{arch}.json"));
        return Ok((read_file(&path)?, path.display().to_string()));
    }
    let base = cfg.url.as_deref().unwrap_or(DEFAULT_GRAPH_URL);
    let url = format!("{base}?channel={channel}&arch={arch}");
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("prewarm/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let resp = http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .with_context(|| format!("update graph {url}"))?;
    if !resp.status().is_success() {
        bail!("update graph {url}: HTTP {}", resp.status());
    }
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("update graph {url}"))?;
    Ok((parse(&body, &url)?, url))
}

fn read_file(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read update graph {}", path.display()))?;
    parse(&bytes, &path.display().to_string())
}

/// Releases selected from all of the job's channels, with their origins and risk notes.
#[derive(Debug, Default)]
pub struct ForJob {
    pub releases: Vec<(Reference, String)>,
    pub notes: Vec<String>,
    /// Per channel and architecture, version → payload of what was selected.
    pub channels: Vec<super::Tracked>,
}

pub async fn select_for_job(job: &Job) -> Result<ForJob> {
    let mut out = ForJob::default();
    let file = job.path.display().to_string();
    for (i, ch) in job.channels.iter().enumerate() {
        let what = ch
            .origin
            .clone()
            .unwrap_or_else(|| format!("{file}: channels[{i}]"));
        // The name goes into the update service's query string unescaped.
        if ch.name.is_empty()
            || !ch
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            bail!("{what}.name: `{}` is not a channel name", ch.name);
        }
        match ch.kind.as_deref() {
            None | Some("ocp") | Some("okd") => {}
            Some(other) => bail!("{what}.type: `{other}` is not `ocp` or `okd`"),
        }
        for arch in graph_arches(&job.platforms) {
            let (g, source) = load(job, &ch.name, &arch).await?;
            let sel = select(&g, ch, &format!("{what} ({source})"))?;
            let mut chosen = BTreeMap::new();
            for i in sel.nodes {
                let n = &g.nodes[i];
                let r: Reference = n.payload.parse().expect("checked by parse");
                chosen.insert(n.version.clone(), n.payload.clone());
                out.releases
                    .push((r, format!("channel {} {arch} {}", ch.name, n.version)));
            }
            out.channels.push(super::Tracked {
                kind: super::TrackedKind::Channel,
                key: super::Tracked::channel_key(&ch.name, &arch),
                digest: None,
                selection: chosen,
                images: Vec::new(),
            });
            out.notes.extend(sel.risks);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Graph {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/graph-stable-4.20-amd64.json"
        ))
        .unwrap();
        parse(&bytes, "graph.json").unwrap()
    }

    fn spec(min: Option<&str>, max: Option<&str>, full: bool, shortest: bool) -> ChannelSpec {
        ChannelSpec {
            name: "stable-4.20".into(),
            min_version: min.map(Into::into),
            max_version: max.map(Into::into),
            full,
            shortest_path: shortest,
            ..ChannelSpec::default()
        }
    }

    fn versions(g: &Graph, s: &ChannelSpec) -> Vec<String> {
        select(g, s, "t")
            .unwrap()
            .nodes
            .iter()
            .map(|i| g.nodes[*i].version.clone())
            .collect()
    }

    #[test]
    fn fixture_selection_by_bounds_full_and_default() {
        let g = fixture();
        assert_eq!(versions(&g, &spec(None, None, false, false)), ["4.20.3"]);
        assert_eq!(
            versions(&g, &spec(None, None, true, false)),
            ["4.20.1", "4.20.2", "4.20.3"]
        );
        assert_eq!(
            versions(&g, &spec(Some("4.20.2"), Some("4.20.3"), false, false)),
            ["4.20.2", "4.20.3"]
        );
        assert_eq!(
            versions(&g, &spec(Some("4.20.2"), None, false, false)),
            ["4.20.2", "4.20.3"]
        );
        assert_eq!(
            versions(&g, &spec(None, Some("4.20.2"), false, false)),
            ["4.20.2"]
        );
        // The 4.20.1 -> 4.20.3 edge is conditional: the shortest path ignores it.
        assert_eq!(
            versions(&g, &spec(Some("4.20.1"), Some("4.20.3"), false, true)),
            ["4.20.1", "4.20.2", "4.20.3"]
        );
        let risks = select(&g, &spec(None, None, true, false), "t")
            .unwrap()
            .risks;
        assert_eq!(risks.len(), 1);
        assert!(
            risks[0].contains("4.20.1 -> 4.20.3 carries risk ExampleRisk"),
            "{}",
            risks[0]
        );
    }

    /// 4.20.0 → 4.20.1 → … → 4.20.6 one by one, plus 4.20.0 → 4.20.3 and 4.20.3 → 4.20.6: the
    /// shortest path takes the jumps; a full or ranged selection takes every node.
    #[test]
    fn crafted_graph_shortest_path_takes_the_jumps() {
        let mut nodes = String::new();
        for i in 0..7 {
            if i > 0 {
                nodes.push(',');
            }
            nodes.push_str(&format!(
                r#"{{"version":"4.20.{i}","payload":"quay.io/openshift-release-dev/ocp-release@sha256:{}","metadata":{{}}}}"#,
                format!("{i}").repeat(64)
            ));
        }
        // Node order deliberately not version order.
        let text = format!(
            r#"{{"nodes":[{nodes}],"edges":[[0,1],[1,2],[2,3],[3,4],[4,5],[5,6],[0,3],[3,6]]}}"#
        );
        let g = parse(text.as_bytes(), "crafted").unwrap();
        assert_eq!(
            versions(&g, &spec(Some("4.20.0"), Some("4.20.6"), false, true)),
            ["4.20.0", "4.20.3", "4.20.6"]
        );
        assert_eq!(
            versions(&g, &spec(Some("4.20.1"), Some("4.20.5"), false, true)),
            ["4.20.1", "4.20.2", "4.20.3", "4.20.4", "4.20.5"]
        );
        assert_eq!(
            versions(&g, &spec(None, None, false, true)),
            ["4.20.0", "4.20.3", "4.20.6"]
        );
        assert_eq!(
            versions(&g, &spec(Some("4.20.2"), Some("4.20.4"), false, false)),
            ["4.20.2", "4.20.3", "4.20.4"]
        );
        assert_eq!(
            versions(&g, &spec(None, Some("4.20.4"), true, false)).len(),
            5
        );
        let err = select(&g, &spec(Some("4.20.9"), None, false, true), "ch")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ch.minVersion: 4.20.9 is not in channel"),
            "{err}"
        );
        let err = select(&g, &spec(Some("4.20.6"), Some("4.20.0"), false, true), "ch")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no upgrade path from 4.20.6 to 4.20.0"),
            "{err}"
        );
    }

    #[test]
    fn malformed_graphs_name_the_field() {
        let err = parse(br#"{"nodes":[{"version":"4.20.1"}],"edges":[]}"#, "g.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("g.json: nodes[0]: missing field `payload`"),
            "{err}"
        );
        let err = parse(
            br#"{"nodes":[{"version":"4.20.1","payload":"quay.io/a/b:1"}],"edges":[[0,5]]}"#,
            "g.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("g.json: edges[0]: [0, 5] points past"),
            "{err}"
        );
        let err = parse(
            br#"{"nodes":[{"version":"four","payload":"quay.io/a/b:1"}],"edges":[]}"#,
            "g.json",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "g.json: nodes[0].version: `four` is not a version");
    }
}
