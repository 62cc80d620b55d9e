//! A fake `cloudflared` executable: a Python script written by the test that accepts the real
//! flags, serves `/quicktunnel` and `/ready` on the `--metrics` address, and logs its argv,
//! pid and `TUNNEL_TOKEN` (as JSON lines) so tests can check what the supervisor did.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Behaviour of the fake.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Seconds after start before `/ready` answers 200.
    pub ready_after: f64,
    /// The first run exits with status 1 after this many seconds.
    pub first_run_dies_after: Option<f64>,
}

/// Writes the fake into `dir`; returns (executable, log file).
pub fn write(dir: &Path, b: Behaviour) -> (PathBuf, PathBuf) {
    let exe = dir.join("cloudflared");
    let log = dir.join("cloudflared.log");
    let die = b
        .first_run_dies_after
        .map_or("None".to_owned(), |s| s.to_string());
    let script = format!(
        r#"#!/usr/bin/env python3
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
LOG = {log:?}
args = sys.argv[1:]
metrics = args[args.index("--metrics") + 1]
host, port = metrics.rsplit(":", 1)
quick = "--url" in args
runs = 0
if os.path.exists(LOG):
    with open(LOG) as f:
        runs = sum(1 for _ in f)
with open(LOG, "a") as f:
    f.write(json.dumps({{"argv": args, "pid": os.getpid(), "token": os.environ.get("TUNNEL_TOKEN")}}) + "\n")
start = time.time()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/quicktunnel":
            name = "fake-%d.trycloudflare.com" % os.getpid() if quick else ""
            code, body = 200, json.dumps({{"hostname": name}})
        elif self.path == "/ready":
            ok = time.time() - start >= {ready}
            code = 200 if ok else 503
            body = json.dumps({{"status": code, "readyConnections": 1 if ok else 0}})
        else:
            code, body = 404, "{{}}"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a):
        pass
srv = ThreadingHTTPServer((host, int(port)), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print("INF Your quick Tunnel has been created!", file=sys.stderr, flush=True)
die = {die}
if die is not None and runs == 0:
    time.sleep(die)
    sys.exit(1)
while True:
    time.sleep(1)
"#,
        log = log.display().to_string(),
        ready = b.ready_after,
    );
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    (exe, log)
}

/// One logged start of the fake.
#[derive(Debug, serde::Deserialize)]
pub struct Start {
    /// Its argv (without the program name).
    pub argv: Vec<String>,
    /// Its pid.
    pub pid: u32,
    /// `TUNNEL_TOKEN` as the child saw it.
    pub token: Option<String>,
}

/// Every start so far.
pub fn starts(log: &Path) -> Vec<Start> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether `python3` can run the fake here.
pub fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success())
}
