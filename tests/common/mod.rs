//! Test support: a lab per test (real registries, proxies and nginx on loopback, stopped on
//! drop), seeded with the small OCP-shaped set, and helpers to run the binary and skopeo.
#![allow(dead_code)]

pub mod faultproxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use prewarm_lab::{scratch_dir, Lab, Scale, Seed, SeedOptions};

pub struct Env {
    pub lab: Lab,
    pub seed: Seed,
    pub dir: PathBuf,
    pub job: PathBuf,
    pub auth: PathBuf,
}

/// Start a lab in a fresh directory and seed it. Fails (never skips) when the servers are not
/// installed, naming the package.
pub fn lab(name: &str) -> Env {
    let dir = scratch_dir(name).expect("scratch dir");
    let lab = Lab::start(&dir, false)
        .expect("lab start (apt-get install -y docker-registry skopeo nginx apache2-utils)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let seed = rt
        .block_on(lab.seed(&SeedOptions {
            scale: Scale::Test,
            large_layer_bytes: None,
            work_dir: dir.join("seed-work"),
        }))
        .expect("seed");
    let job = lab.write_job().expect("job");
    let auth = dir.join("auth.json");
    Env {
        lab,
        seed,
        dir,
        job,
        auth,
    }
}

/// A passing test leaves nothing behind: the lab stops, its directory goes (set
/// PREWARM_KEEP_LAB=1 to keep it). A failing test keeps it for a look.
impl Drop for Env {
    fn drop(&mut self) {
        self.lab.stop();
        if !std::thread::panicking() && std::env::var_os("PREWARM_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Env {
    /// Run `prewarm ARGS --authfile auth.json`.
    pub fn prewarm(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
            .args(args)
            .arg("--authfile")
            .arg(&self.auth)
            .env_remove("REGISTRY_AUTH_FILE")
            // The default state database (warm, copy, import record into it) lives in the
            // lab, not in the home directory shared by every test and the developer.
            .env("XDG_STATE_HOME", self.dir.join("xdg-state"))
            .output()
            .expect("run prewarm");
        eprintln!(
            "prewarm {}: {}\n--- stderr\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Add the lab user for `dest` to the auth file (the upstream's entry); its path.
    pub fn auth_with(&self, dest: &prewarm_lab::ExtraRegistry) -> PathBuf {
        let path = self.dir.join("auth.json");
        let mut auth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entry = auth["auths"]["registry.redhat.io"].clone();
        auth["auths"][&dest.address] = entry;
        std::fs::write(&path, serde_json::to_vec(&auth).unwrap()).unwrap();
        path
    }

    /// The lab CA, for `--to-ca`.
    pub fn ca(&self) -> String {
        self.lab.ca_cert.display().to_string()
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The cache org that serves a logical host.
    pub fn cache_path(&self, reference: &str) -> String {
        let r: prewarm::reference::Reference = reference.parse().unwrap();
        let org = prewarm::job::default_org(r.registry());
        format!("{}/{}/{}", self.lab.front_addr(), org, r.repository())
    }

    /// GETs of blobs that reached an upstream registry, once the count has stopped moving
    /// (a proxy finishes its background fetches, and logs them, after the client is served).
    pub fn settled_upstream_blob_gets(&self) -> usize {
        let mut last = self.upstream_blob_gets();
        let mut stable_since = std::time::Instant::now();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while stable_since.elapsed() < std::time::Duration::from_millis(1500)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let now = self.upstream_blob_gets();
            if now != last {
                last = now;
                stable_since = std::time::Instant::now();
            }
        }
        last
    }

    /// Whether a distribution proxy's storage links `digest` into `repository` (what it serves
    /// from without its upstream), read straight from the proxy's files.
    pub fn proxy_holds(&self, cache_repository: &str, digest: &str) -> bool {
        let (org, repository) = cache_repository.split_once('/').unwrap();
        let storage = match org {
            "cache_quay_io" => &self.lab.proxy_quay_storage,
            "cache_registry_redhat_io" => &self.lab.proxy_redhat_storage,
            other => panic!("no proxy for org {other}"),
        };
        let hex = digest.strip_prefix("sha256:").unwrap();
        let link = storage.join(format!(
            "docker/registry/v2/repositories/{repository}/_layers/sha256/{hex}/link"
        ));
        let data = prewarm_lab::blob_data_path(storage, digest);
        link.is_file() && data.is_file() && sha256_hex(&std::fs::read(data).unwrap()) == hex
    }

    /// Blob uploads a lab registry completed (PUT …?digest=…, 201), per digest, from its
    /// access log.
    pub fn blob_puts(
        &self,
        dest: &prewarm_lab::ExtraRegistry,
    ) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for (m, target, status) in self.lab.registry_requests(dest).unwrap() {
            if m == "PUT" && target.contains("/blobs/uploads/") && status == 201 {
                let digest = target.split("digest=").nth(1).unwrap();
                let digest = digest.split('&').next().unwrap().replace("%3A", ":");
                *out.entry(digest).or_default() += 1;
            }
        }
        out
    }

    /// GETs of blobs that reached an upstream registry so far.
    pub fn upstream_blob_gets(&self) -> usize {
        self.upstream_blob_requests().len()
    }

    pub fn upstream_blob_requests(&self) -> Vec<String> {
        [&self.lab.quay, &self.lab.redhat]
            .iter()
            .flat_map(|s| self.lab.requests(s).unwrap())
            .filter(|(m, p, _)| m == "GET" && p.contains("/blobs/"))
            .map(|(m, p, s)| format!("{m} {p} {s}"))
            .collect()
    }
}

pub fn skopeo(args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (apt-get install -y skopeo)");
    if !out.status.success() {
        eprintln!(
            "skopeo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report")).expect("report JSON")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    prewarm::reference::Digest::sha256_of(bytes)
        .hex()
        .to_string()
}

/// Every blob file in a distribution storage root hashes to its name.
pub fn assert_storage_intact(root: &Path) {
    let blobs = root.join("docker/registry/v2/blobs/sha256");
    let Ok(prefixes) = std::fs::read_dir(&blobs) else {
        return;
    };
    for prefix in prefixes {
        for dir in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let dir = dir.unwrap().path();
            let data = dir.join("data");
            if data.is_file() {
                let name = dir.file_name().unwrap().to_str().unwrap().to_string();
                assert_eq!(
                    sha256_hex(&std::fs::read(&data).unwrap()),
                    name,
                    "corrupt blob in {}",
                    data.display()
                );
            }
        }
    }
}

/// A plain (HTTP, no auth) distribution registry on a free loopback port, killed on drop.
pub struct Plain {
    pub addr: String,
    pub storage: PathBuf,
    child: Child,
}

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn plain_registry(dir: &Path, name: &str) -> Plain {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = dir.join(format!("data-{name}"));
    let config = dir.join(format!("{name}.yml"));
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\nhealth: {{storagedriver: {{enabled: false}}}}\n",
            storage.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry (apt-get install -y docker-registry)");
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    Plain {
        addr,
        storage,
        child,
    }
}
