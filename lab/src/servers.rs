//! A local "lab" of real registry servers on 127.0.0.1, for integration tests and `lab up/down`.
//!
//! prewarm warms Quay-style pull-through caches that sit in front of quay.io and
//! registry.redhat.io. Mocks would hide the behaviour that matters (what a cold proxy fetches,
//! what survives an upstream outage), so the lab runs the real servers:
//!
//! ```text
//! quay   (distribution, http)           <- proxy_quay (distribution pull-through)   <-+
//! redhat (distribution, https+htpasswd) <- bridge (nginx, adds Basic) <- proxy_redhat <-+
//!                  front (nginx: /v2/cache_quay_io/…, /v2/cache_registry_redhat_io/…) --+
//!                        (and /v2/prewarm/… -> local (distribution, http, writable))
//! ```
//!
//! `local` stands for a regular Quay organisation beside the cache orgs on the cache host
//! ([`BUILT_ORG`], the default of a job's `cache.built_org`): `warm` pushes the images it builds
//! (filtered catalogs, the graph image) there.
//!
//! The bridge exists because distribution's proxy cannot send Basic auth upstream; it mimics
//! Quay's per-organisation upstream credentials. Each server is a child process in its own
//! process group (a test's Ctrl-C does not reach it), logs to files under the lab dir, and is
//! stopped with SIGTERM, then SIGKILL after 5 s. Layout of DIR: `tls/` (CA and leaf),
//! `certs/ca.crt` (for `skopeo --cert-dir`), `auth/htpasswd`, `conf/`, `logs/`, `data/<server>/`
//! (storage roots), `nginx/<server>/` (pid file, temp dirs) and `lab.json` (PIDs and commands, so
//! that another process can stop or restart the servers).

use anyhow::{anyhow, bail, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::{fs::MetadataExt, process::CommandExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const USER: &str = "labuser";
/// Contains colons on purpose: clients must split `user:pass` on the first colon only.
const PASSWORD: &str = "lab:pass:word";

/// How to tell that a server is ready: `GET /v2/` answers 200.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
enum Probe {
    /// Plain HTTP: a hand-written HTTP/1.1 request over a TcpStream.
    #[default]
    Http,
    /// TLS plus Basic auth (CA file, user, password): std has no TLS, so `curl --cacert`.
    Https(PathBuf, String, String),
}

/// One server process of the lab.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Server {
    pub name: String,
    pub port: u16,
    /// PID of the running process, also its process group id; 0 when stopped.
    pub pid: u32,
    /// Access log. distribution: its stdout+stderr (combined-format access lines mixed with
    /// logrus `time=… level=…` lines). nginx: its `access_log`. Appended to across restarts.
    pub log: PathBuf,
    /// What to run again on restart: absolute program path and arguments (with config path).
    program: PathBuf,
    args: Vec<String>,
    /// Where stdout and stderr go, and nginx's error log: shown when start-up fails.
    output: PathBuf,
    errlog: Option<PathBuf>,
    probe: Probe,
    #[serde(skip)]
    child: Option<Child>,
}

impl Server {
    /// Start the process and wait until it answers; on failure the error has its log's tail.
    fn spawn(&mut self) -> Result<()> {
        let mut out = fs::OpenOptions::new();
        let out = out.create(true).append(true).open(&self.output);
        let out = out.with_context(|| format!("open {}", self.output.display()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null());
        cmd.stdout(out.try_clone()?).stderr(out);
        // distribution lets REGISTRY_* variables override its config file.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.process_group(0).spawn();
        let child = child.with_context(|| format!("spawn {}", self.program.display()))?;
        (self.pid, self.child) = (child.id(), Some(child));
        let (port, deadline) = (self.port, Instant::now() + START_TIMEOUT);
        loop {
            // Probe first, then check for an exit: the port may be another server's.
            let up = self.ready();
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                (self.pid, self.child) = (0, None);
                let recent = self.recent();
                bail!(
                    "{} (port {port}) exited at once ({status})\n{recent}",
                    self.name
                );
            }
            if up {
                tracing::debug!(server = %self.name, port, pid = self.pid, "lab server up");
                return Ok(());
            }
            if Instant::now() > deadline {
                let recent = self.recent();
                self.stop();
                bail!(
                    "{} (port {port}): no 200 for GET /v2/ in 20 s\n{recent}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self) -> bool {
        match &self.probe {
            Probe::Http => http_status(self.port).ok() == Some(200),
            Probe::Https(ca, user, password) => {
                let mut curl = Command::new("curl");
                curl.args("-s --noproxy * --max-time 2 -o /dev/null -w %{http_code}".split(' '));
                curl.arg("--cacert")
                    .arg(ca)
                    .args(["-u", &format!("{user}:{password}")]);
                curl.arg(format!("https://127.0.0.1:{}/v2/", self.port));
                let out = curl.stdin(Stdio::null()).output();
                out.is_ok_and(|o| o.stdout == b"200")
            }
        }
    }

    /// The last lines of its logs, for error messages.
    fn recent(&self) -> String {
        let mut text = String::new();
        for path in [&self.output].into_iter().chain(&self.errlog) {
            let log = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            text += &format!("--- {}:\n{tail}\n", path.display());
        }
        text
    }

    /// Whether the process still runs. For a process that is not our child (lab loaded from
    /// lab.json), also check that the PID still runs our program, in case it was reused.
    fn alive(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        let proc = |f: &str| fs::read(format!("/proc/{}/{f}", self.pid)).unwrap_or_default();
        let stat = String::from_utf8_lossy(&proc("stat")).into_owned();
        // The state follows the command name in parentheses; Z is a zombie.
        let state = stat.rsplit(')').next().unwrap_or("Z").trim_start();
        let prog = self.program.file_name().unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&proc("cmdline")).into_owned();
        let ours = cmdline.contains(&*prog.to_string_lossy());
        self.pid != 0 && !stat.is_empty() && !state.starts_with('Z') && ours
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL its whole process group. Idempotent.
    fn stop(&mut self) {
        if self.alive() {
            signal("TERM", self.pid.to_string());
            if !self.wait_gone(STOP_TIMEOUT) {
                tracing::warn!(server = %self.name, pid = self.pid, "no exit on SIGTERM: SIGKILL");
                signal("KILL", format!("-{}", self.pid));
                self.wait_gone(Duration::from_secs(2));
            }
        }
        (self.pid, self.child) = (0, None);
        // A process that is exiting can look gone (its cmdline is empty) while it still holds
        // its port: a restart on the same port must wait for the port itself.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.port != 0
            && std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err()
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_gone(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.alive() {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

fn signal(sig: &str, target: String) {
    let mut kill = Command::new("kill");
    kill.args([format!("-{sig}"), "--".into(), target]);
    let _ = kill.stdin(Stdio::null()).stderr(Stdio::null()).status();
}

/// Status code of `GET /v2/` on a plain-HTTP server.
fn http_status(port: u16) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = String::new();
    s.read_to_string(&mut head)?;
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok());
    code.ok_or_else(|| std::io::ErrorKind::InvalidData.into())
}

/// The running lab. See the module doc for the topology.
#[derive(Debug, Serialize, Deserialize)]
pub struct Lab {
    pub dir: PathBuf,
    /// Upstream quay.io stand-in: http://127.0.0.1:port, no auth.
    pub quay: Server,
    /// Upstream registry.redhat.io stand-in: https://127.0.0.1:port, test CA, htpasswd auth.
    pub redhat: Server,
    /// distribution pull-through proxy of `quay`.
    pub proxy_quay: Server,
    /// distribution pull-through proxy of `redhat` (through the bridge, which adds Basic auth).
    pub proxy_redhat: Server,
    /// nginx, the cache host: http://127.0.0.1:port, orgs cache_quay_io, cache_registry_redhat_io
    /// (proxies) and [`BUILT_ORG`] (`local`).
    pub front: Server,
    /// A writable distribution behind the front's regular org [`BUILT_ORG`], storing repositories
    /// under their full path (`prewarm/…`).
    #[serde(default)]
    pub local: Server,
    /// PEM of the test CA; also copied to DIR/certs/ca.crt so `skopeo --cert-dir DIR/certs` works.
    pub ca_cert: PathBuf,
    /// Credentials of the redhat upstream.
    pub user: String,
    pub password: String,
    /// Storage roots (the dirs containing docker/registry/v2).
    pub quay_storage: PathBuf,
    pub redhat_storage: PathBuf,
    pub proxy_quay_storage: PathBuf,
    pub proxy_redhat_storage: PathBuf,
    /// nginx adding the Basic auth header in front of `redhat`; counts as an upstream.
    bridge: Server,
    /// Registries started by [`Lab::start_registry`], stopped with the lab.
    #[serde(default)]
    extra: Vec<Server>,
    /// Detached or loaded: leave the servers running on drop.
    #[serde(skip)]
    detached: bool,
}

impl Lab {
    /// Start everything under `dir` (created if missing). `detached=false`: stop all on Drop
    /// (tests). `detached=true`: leave running. DIR/lab.json is written either way, so that
    /// `Lab::load(dir)?.stop()` can also clean up after a killed test. Existing storage is kept.
    pub fn start(dir: &Path, detached: bool) -> Result<Lab> {
        let registry = find_bin("docker-registry", "docker-registry")?;
        let nginx_bin = find_bin("nginx", "nginx")?;
        let tools = [
            ("openssl", "openssl"),
            ("htpasswd", "apache2-utils"),
            ("curl", "curl"),
        ];
        for (bin, pkg) in tools.into_iter().chain([("kill", "procps")]) {
            find_bin(bin, pkg)?;
        }
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        if let Ok(mut old) = Lab::load(&dir) {
            if old.all_mut().iter_mut().any(|s| s.alive()) {
                bail!(
                    "a lab runs in {} (see lab.json): stop it first",
                    dir.display()
                );
            }
        }
        for sub in ["tls", "certs", "auth", "conf", "logs", "data", "nginx"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let tls = dir.join("tls");
        make_certs(&tls)?;
        fs::copy(tls.join("ca.crt"), dir.join("certs/ca.crt"))?;
        let htpasswd = dir.join("auth/htpasswd");
        let line = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]))?;
        fs::write(&htpasswd, line)?;
        let data = |name: &str| dir.join("data").join(name);
        // Until the end, a failure drops `lab`, which stops the servers started so far.
        let mut lab = Lab {
            dir: dir.clone(),
            ca_cert: tls.join("ca.crt"),
            user: USER.into(),
            password: PASSWORD.into(),
            quay_storage: data("quay"),
            redhat_storage: data("redhat"),
            proxy_quay_storage: data("proxy_quay"),
            proxy_redhat_storage: data("proxy_redhat"),
            quay: Server::default(),
            redhat: Server::default(),
            bridge: Server::default(),
            proxy_quay: Server::default(),
            proxy_redhat: Server::default(),
            front: Server::default(),
            local: Server::default(),
            extra: Vec::new(),
            detached: false,
        };
        let reg = |name: &str, port: u16, root: &Path, f: &dyn Fn(&mut Value)| {
            let mut cfg = json!({
                "version": "0.1", "log": {"level": "info"},
                "storage": {"filesystem": {"rootdirectory": root}, "delete": {"enabled": true}},
                "http": {"addr": format!("127.0.0.1:{port}")},
                "health": {"storagedriver": {"enabled": false}},
            });
            f(&mut cfg);
            let conf = dir.join(format!("conf/{name}.yml"));
            // YAML is a superset of JSON, so serde_json does the quoting.
            fs::write(&conf, serde_json::to_string_pretty(&cfg)?)?;
            let (log, args) = (
                dir.join(format!("logs/{name}.log")),
                vec!["serve".into(), s(&conf)],
            );
            let (name, output, program) = (name.into(), log.clone(), registry.clone());
            Ok(Server {
                name,
                port,
                log,
                program,
                args,
                output,
                ..Default::default()
            })
        };
        let proxy = |p: u16| move |c: &mut Value| c["proxy"]["remoteurl"] = json!(url(p));
        lab.quay = launch(|p| reg("quay", p, &lab.quay_storage, &|_| {}))?;
        lab.redhat = launch(|p| {
            let mut s = reg("redhat", p, &lab.redhat_storage, &|c| {
                c["http"]["tls"] =
                    json!({"certificate": tls.join("server.crt"), "key": tls.join("server.key")});
                c["auth"] = json!({"htpasswd": {"realm": "lab-redhat", "path": htpasswd}});
            })?;
            s.probe = Probe::Https(lab.ca_cert.clone(), USER.into(), PASSWORD.into());
            Ok(s)
        })?;
        let bridge = BRIDGE.replace("@REDHAT@", &lab.redhat.port.to_string());
        let bridge = bridge.replace("@AUTH@", &B64.encode(format!("{USER}:{PASSWORD}")));
        let bridge = bridge.replace("@CA@", &s(&lab.ca_cert));
        lab.bridge = launch(|p| nginx(&dir, &nginx_bin, "bridge", p, &bridge))?;
        let (quay, bridge) = (proxy(lab.quay.port), proxy(lab.bridge.port));
        lab.proxy_quay = launch(|p| reg("proxy_quay", p, &data("proxy_quay"), &quay))?;
        lab.proxy_redhat = launch(|p| reg("proxy_redhat", p, &data("proxy_redhat"), &bridge))?;
        lab.local = launch(|p| reg("local", p, &data("local"), &|_| {}))?;
        let front = FRONT.replace("@QUAY@", &lab.proxy_quay.port.to_string());
        let front = front.replace("@REDHAT@", &lab.proxy_redhat.port.to_string());
        let front = front.replace("@LOCAL@", &lab.local.port.to_string());
        let front = front.replace("@BUILT_ORG@", BUILT_ORG);
        lab.front = launch(|p| nginx(&dir, &nginx_bin, "front", p, &front))?;
        lab.save()?;
        lab.detached = detached;
        tracing::info!(dir = %dir.display(), front = %lab.front_addr(), "lab started");
        Ok(lab)
    }

    /// Load DIR/lab.json written by `start` (for `lab down`, `lab seed` in another process).
    /// The returned Lab does not stop servers on drop.
    pub fn load(dir: &Path) -> Result<Lab> {
        let path = dir.join("lab.json");
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let lab = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()));
        let mut lab: Lab = lab?;
        lab.detached = true;
        Ok(lab)
    }

    /// Stop everything, front first (idempotent).
    pub fn stop(&mut self) {
        self.extra.iter_mut().for_each(Server::stop);
        self.all_mut().into_iter().rev().for_each(Server::stop);
        self.save_or_warn();
    }

    /// Stop quay, redhat and the bridge: the cache must keep serving cached content.
    pub fn stop_upstreams(&mut self) {
        let upstreams = [&mut self.bridge, &mut self.redhat, &mut self.quay];
        upstreams.into_iter().for_each(Server::stop);
        self.save_or_warn();
    }

    /// Start the upstreams that are not running: same ports, same storage.
    pub fn start_upstreams(&mut self) -> Result<()> {
        for s in [&mut self.quay, &mut self.redhat, &mut self.bridge] {
            if !s.alive() {
                s.spawn()?;
            }
        }
        self.save()
    }

    /// Cold cache: stop both proxies, delete their storage, start them again on the same ports.
    /// The upstreams must be running: a distribution proxy exits at start-up otherwise.
    pub fn reset_cache(&mut self) -> Result<()> {
        let proxies = [
            (&mut self.proxy_quay, &self.proxy_quay_storage),
            (&mut self.proxy_redhat, &self.proxy_redhat_storage),
        ];
        for (server, root) in proxies {
            server.stop();
            match fs::remove_dir_all(root) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("remove {}", root.display()))
                }
                _ => fs::create_dir_all(root)?,
            }
            server.spawn()?;
        }
        self.save()
    }

    /// `http://127.0.0.1:PORT` of the quay upstream.
    pub fn quay_url(&self) -> String {
        url(self.quay.port)
    }
    /// `127.0.0.1:PORT` of the quay upstream (plain HTTP, no auth).
    pub fn quay_addr(&self) -> String {
        format!("127.0.0.1:{}", self.quay.port)
    }
    /// `127.0.0.1:PORT` of the redhat upstream (HTTPS with the test CA, Basic auth).
    pub fn redhat_addr(&self) -> String {
        format!("127.0.0.1:{}", self.redhat.port)
    }
    /// `127.0.0.1:PORT` of the cache host (plain HTTP, no auth).
    pub fn front_addr(&self) -> String {
        format!("127.0.0.1:{}", self.front.port)
    }

    /// Requests seen by a server, parsed from its access log: (method, request target as logged,
    /// query string included, status). Logs are kept across restarts: compare counts.
    pub fn requests(&self, server: &Server) -> Result<Vec<(String, String, u16)>> {
        let text = fs::read_to_string(&server.log);
        let text = text.with_context(|| format!("read {}", server.log.display()))?;
        Ok(text.lines().filter_map(parse_access_line).collect())
    }

    /// Write a docker-config style auth file with `self.user` and `password` for
    /// registry.redhat.io and for the redhat upstream's address.
    pub fn write_auth_file(&self, path: &Path, password: &str) -> Result<()> {
        let auth = json!({ "auth": B64.encode(format!("{}:{password}", self.user)) });
        let mut auths = serde_json::Map::new();
        auths.insert("registry.redhat.io".into(), auth.clone());
        auths.insert(self.redhat_addr(), auth);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let text = serde_json::to_vec_pretty(&json!({ "auths": auths }))?;
        fs::write(path, text).with_context(|| format!("write {}", path.display()))
    }

    /// Start one more plain registry (distribution, not a proxy) named `name`, empty, with TLS
    /// (the lab CA) and htpasswd auth (the lab user): a destination for copies and imports.
    /// Stopped with the lab.
    pub fn start_registry(&mut self, name: &str) -> Result<ExtraRegistry> {
        let registry = find_bin("docker-registry", "docker-registry")?;
        let dir = self.dir.clone();
        let root = dir.join("data").join(name);
        fs::create_dir_all(&root)?;
        let tls = dir.join("tls");
        let htpasswd = dir.join("auth/htpasswd");
        let ca = self.ca_cert.clone();
        let (user, password) = (self.user.clone(), self.password.clone());
        let server = launch(|port| {
            let cfg = json!({
                "version": "0.1", "log": {"level": "info"},
                "storage": {"filesystem": {"rootdirectory": root}, "delete": {"enabled": true}},
                "http": {"addr": format!("127.0.0.1:{port}"), "tls":
                    {"certificate": tls.join("server.crt"), "key": tls.join("server.key")}},
                "auth": {"htpasswd": {"realm": format!("lab-{name}"), "path": htpasswd}},
                "health": {"storagedriver": {"enabled": false}},
            });
            let conf = dir.join(format!("conf/{name}.yml"));
            fs::write(&conf, serde_json::to_string_pretty(&cfg)?)?;
            let log = dir.join(format!("logs/{name}.log"));
            Ok(Server {
                name: name.into(),
                port,
                log: log.clone(),
                program: registry.clone(),
                args: vec!["serve".into(), s(&conf)],
                output: log,
                probe: Probe::Https(ca.clone(), user.clone(), password.clone()),
                ..Default::default()
            })
        })?;
        let info = ExtraRegistry {
            name: name.into(),
            address: format!("127.0.0.1:{}", server.port),
            log: server.log.clone(),
            storage: root,
            pid: server.pid,
        };
        self.extra.push(server);
        self.save()?;
        Ok(info)
    }

    /// Requests seen by a server started with [`Lab::start_registry`], as [`Lab::requests`].
    pub fn registry_requests(
        &self,
        registry: &ExtraRegistry,
    ) -> Result<Vec<(String, String, u16)>> {
        let text = fs::read_to_string(&registry.log);
        let text = text.with_context(|| format!("read {}", registry.log.display()))?;
        Ok(text.lines().filter_map(parse_access_line).collect())
    }

    /// All servers in start order.
    fn all_mut(&mut self) -> [&mut Server; 7] {
        let Lab {
            quay,
            redhat,
            bridge,
            proxy_quay,
            proxy_redhat,
            local,
            front,
            ..
        } = self;
        [quay, redhat, bridge, proxy_quay, proxy_redhat, local, front]
    }

    fn save(&self) -> Result<()> {
        let (path, tmp) = (self.dir.join("lab.json"), self.dir.join("lab.json.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
    }

    fn save_or_warn(&self) {
        if let Err(e) = self.save() {
            tracing::warn!("{e:#}");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}

/// A registry started by [`Lab::start_registry`]: HTTPS with the lab CA, the lab user.
#[derive(Debug, Clone)]
pub struct ExtraRegistry {
    pub name: String,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Its access log (see [`Server::log`]).
    pub log: PathBuf,
    /// Its storage root.
    pub storage: PathBuf,
    pub pid: u32,
}

/// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "ua"` (distribution and nginx alike).
fn parse_access_line(line: &str) -> Option<(String, String, u16)> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let [method, target, proto] = request.split(' ').collect::<Vec<_>>().try_into().ok()?;
    let status = rest.split_whitespace().next()?.parse().ok()?;
    let ok = proto.starts_with("HTTP/") && !line.starts_with("time=");
    ok.then(|| (method.into(), target.into(), status))
}

/// Start a new server on a free port; retry on another port if that one was taken meanwhile.
fn launch(make: impl Fn(u16) -> Result<Server>) -> Result<Server> {
    let mut attempt = 0;
    loop {
        let mut server = make(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())?;
        match server.spawn() {
            Err(e) if attempt < 2 && format!("{e:#}").contains("ddress already in use") => {
                tracing::warn!(server = %server.name, "port taken meanwhile, trying another");
                attempt += 1;
            }
            result => return result.map(|()| server),
        }
    }
}

/// The nginx config around the `location`s. `daemon off;` keeps the master our child.
const NGINX: &str = r#"@USER@ daemon off; worker_processes 1; pid "@BASE@/nginx.pid";
error_log "@ERRLOG@" notice; events { worker_connections 512; }
http {
  access_log "@LOG@"; client_body_temp_path "@BASE@/body"; proxy_temp_path "@BASE@/proxy";
  fastcgi_temp_path "@BASE@/fcgi"; uwsgi_temp_path "@BASE@/uwsgi"; scgi_temp_path "@BASE@/scgi";
  proxy_buffering off; proxy_request_buffering off; proxy_http_version 1.1;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:@PORT@;
@LOCATIONS@  }
}
"#;

const FRONT: &str = r#"
    location = /v2/ {
      default_type application/json;
      add_header Docker-Distribution-Api-Version registry/2.0 always;
      return 200 '{}';
    }
    location ~ ^/v2/cache_quay_io/(.*)$ {
      proxy_pass http://127.0.0.1:@QUAY@/v2/$1$is_args$args;
    }
    location ~ ^/v2/cache_registry_redhat_io/(.*)$ {
      proxy_pass http://127.0.0.1:@REDHAT@/v2/$1$is_args$args;
    }
    location /v2/@BUILT_ORG@/ {
      proxy_pass http://127.0.0.1:@LOCAL@;
      proxy_set_header Host $http_host;
    }
"#;

/// The regular (writable) org of the front, served by `local`.
pub const BUILT_ORG: &str = "prewarm";

const BRIDGE: &str = r#"
    location / {
      proxy_pass https://127.0.0.1:@REDHAT@;
      proxy_set_header Authorization "Basic @AUTH@";
      proxy_ssl_trusted_certificate "@CA@";
      proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_server_name on;
    }
"#;

/// An nginx in the foreground, writing everything under the lab dir.
fn nginx(dir: &Path, program: &Path, name: &str, port: u16, locations: &str) -> Result<Server> {
    let base = dir.join("nginx").join(name);
    fs::create_dir_all(&base)?;
    let log = dir.join(format!("logs/{name}.access.log"));
    let errlog = dir.join(format!("logs/{name}.error.log"));
    // As root, workers would run as `nobody`, who may not enter a private temp dir.
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let conf = NGINX.replace("@USER@", if root { "user root;" } else { "" });
    let conf = conf.replace("@BASE@", &s(&base)).replace("@LOG@", &s(&log));
    let conf = conf
        .replace("@ERRLOG@", &s(&errlog))
        .replace("@PORT@", &port.to_string());
    let path = dir.join(format!("conf/{name}.nginx.conf"));
    fs::write(&path, conf.replace("@LOCATIONS@", locations))?;
    Ok(Server {
        name: name.into(),
        port,
        log,
        program: program.into(),
        args: vec!["-c".into(), s(&path), "-e".into(), s(&errlog)],
        output: dir.join(format!("logs/{name}.out.log")),
        errlog: Some(errlog),
        ..Default::default()
    })
}

/// A test CA and a leaf for 127.0.0.1/localhost signed by it (rustls rejects a self-signed leaf).
fn make_certs(tls: &Path) -> Result<()> {
    let ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n\
               basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n";
    fs::write(tls.join("server.ext"), ext)?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for args in [
        format!(
            "req -x509 -new {ec} -keyout ca.key -out ca.crt -days 3650 -subj /CN=prewarm-lab-CA \
                 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        ),
        format!("req -new {ec} -keyout server.key -out server.csr -subj /CN=localhost"),
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
         -out server.crt -extfile server.ext"
            .into(),
    ] {
        let mut openssl = Command::new("openssl");
        run(openssl.current_dir(tls).args(args.split_whitespace()))?;
    }
    Ok(())
}

/// Run a helper command to completion; its stdout on success.
fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.stdin(Stdio::null()).output();
    let out = out.with_context(|| format!("run {cmd:?}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        err.trim()
    );
    Ok(out.stdout)
}

/// Absolute path of `name`: PATH, then the sbin dirs that a non-root PATH may lack.
fn find_bin(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    let mut found = std::env::split_paths(&path)
        .chain(sbin)
        .map(|d| d.join(name));
    found
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} not found: apt-get install -y {package}"))
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
