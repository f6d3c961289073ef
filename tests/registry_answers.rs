//! A server that is not a registry must never count as one: a loopback server answering
//! `200 text/html` (a 67-byte page, as a captive portal or a misrouted proxy does) to every
//! request — and a variant whose `/v2/` answers like a registry while everything else is the
//! page — makes `verify`, `warm` (as the cache), `copy` and `import` (as the destination) and
//! `inventory` fail, naming the server and what came back; none reports anything present,
//! already there or cached.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{lab, read_report, Env};

const PAGE: &str = "<html><head><title>Login</title></head><body>Sign in</body></html>\n";

/// The page server: every request answered with `PAGE`; with `api_root`, `GET /v2/` answers
/// `200 {}` as a registry does. Returns its address and the requests it saw.
fn page_server(api_root: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    assert_eq!(PAGE.len(), 67);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                    if buf.first() == Some(&0x16) {
                        return; // TLS: this server speaks plain HTTP
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line.clone());
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (content_type, body) = if api_root && path == "/v2/" {
                    ("application/json", "{}")
                } else {
                    ("text/html", PAGE)
                };
                let mut reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if method != "HEAD" {
                    reply.push_str(body);
                }
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    (addr, seen)
}

/// The lab's job with the cache at `addr`.
fn job_with_cache(env: &Env, addr: &str, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(&env.job).unwrap();
    let text = text.replace(
        &format!("host: {}", env.lab.front_addr()),
        &format!("host: {addr}"),
    );
    assert!(text.contains(addr));
    let path = env.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The run failed, named the server and what it answered, and reported nothing as held.
fn assert_refused(out: &std::process::Output, addr: &str, report: Option<&Path>) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    if report.is_some() {
        // Per-image failures: the images failed, the run went on.
        assert_eq!(out.status.code(), Some(1), "{stderr}");
    }
    assert!(
        stderr.contains(&format!("http://{addr}/")),
        "the server's URL is named: {stderr}"
    );
    assert!(
        stderr.contains("did not answer as a registry")
            && stderr.contains("HTTP 200")
            && stderr.contains("text/html"),
        "what came back is named: {stderr}"
    );
    if let Some(report) = report {
        let r = read_report(report);
        let images = r["images"].as_array().unwrap();
        assert!(!images.is_empty());
        for image in images {
            assert_eq!(image["status"], "failed", "{image:#}");
        }
        for key in ["present", "copied", "cached", "warmed"] {
            if let Some(n) = r["summary"][key].as_u64() {
                assert_eq!(n, 0, "summary.{key}: {:#}", r["summary"]);
            }
        }
    }
}

#[test]
fn a_server_answering_html_is_never_a_registry_that_holds_anything() {
    let env = lab("registry-answers");
    let bundle = env.dir.join("bundle");
    assert!(env
        .prewarm(&[
            "export",
            env.job.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap()
        ])
        .status
        .success());

    for api_root in [false, true] {
        let (addr, seen) = page_server(api_root);
        let tag = if api_root { "api" } else { "page" };
        let job = job_with_cache(&env, &addr, &format!("job-{tag}.yaml"));
        let job = job.to_str().unwrap();

        let report = env.dir.join(format!("verify-{tag}.json"));
        let state = env.path("state.db");
        let out = env.prewarm(&[
            "verify",
            job,
            "--state",
            &state,
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_refused(&out, &addr, Some(&report));

        let report = env.dir.join(format!("warm-{tag}.json"));
        let out = env.prewarm(&[
            "warm",
            job,
            "--state",
            &state,
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_refused(&out, &addr, Some(&report));

        let report = env.dir.join(format!("copy-{tag}.json"));
        let out = env.prewarm(&[
            "copy",
            env.job.to_str().unwrap(),
            "--to",
            &format!("{addr}/mirror"),
            "--to-insecure",
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_refused(&out, &addr, Some(&report));

        let report = env.dir.join(format!("import-{tag}.json"));
        let out = env.prewarm(&[
            "import",
            bundle.to_str().unwrap(),
            "--to",
            &format!("{addr}/mirror"),
            "--to-insecure",
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_refused(&out, &addr, Some(&report));

        let output = env.dir.join(format!("inventory-{tag}.json"));
        let out = env.prewarm(&[
            "inventory",
            "--registry",
            &addr,
            "--insecure",
            "--repos",
            "mirror/openshift/origin-cli",
            "-o",
            output.to_str().unwrap(),
        ]);
        assert_refused(&out, &addr, None);
        assert!(!output.exists(), "no inventory is written from a page");
        assert!(
            !seen.lock().unwrap().is_empty(),
            "the page server was asked"
        );
    }
}
