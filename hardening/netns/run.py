#!/usr/bin/env python3
"""Real network faults for gpumesh across Linux network namespaces.

Puts a gateway, a seed (a second `gpumesh gateway`) and workers (`gpumesh agent
--mock-service`) each in its own network namespace, joined by veth links to a bridge
that lives in a namespace of its own, on 10.77.0.0/24. Nothing is added to the host's
namespace and nothing can leave the machine: the bridge has no uplink.

Scenarios (see docs/partitions.md):
  a  baseline: discovery after start, routing through the gateway
  b  partition: cut a group of workers, then the seed; routing goes on where a path
     exists; heal and time until the views are whole again
  c  tc netem delay + loss on every worker link: discovery and routing still work
  d  kill -9 a worker, the seed, the gateway; restart; time until the views converge

Needs root, `ip netns`, `tc` and `curl`; python3 standard library only. Always cleans up
(namespaces, processes) on exit, error, Ctrl-C or SIGTERM, and stops itself after
--budget-secs (default 280 s) whatever happens. Exit 0 when every check held, 1 when one
failed (or the binary is missing), 2 when this machine cannot run it (not root, no netns):
then it prints one "skipped: needs root + ip netns (...)" line.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PREFIX = "gmnt"
HUB = f"{PREFIX}-hub"
NET = "10.77.0"
HTTP_PORT = 8080
DHT_PORT = 4001
MOCK_PORT = 8000
SERVICE = "echo"
UPSTREAM_TIMEOUT_SECS = 10
# Fixed addresses: the gateway .1, the seed .2, workers from .11.
ADDR = {"gw": f"{NET}.1", "seed": f"{NET}.2"}
for _i in range(1, 6):
    ADDR[f"w{_i}"] = f"{NET}.{10 + _i}"
WORKERS = ["w1", "w2", "w3", "w4"]
LATE = "w5"  # joins under netem in scenario c
# Outsiders (scenario a, with a network key): x1 has no key, x2 another network's key.
ADDR["x1"] = f"{NET}.31"
ADDR["x2"] = f"{NET}.32"
OUTSIDERS = ["x1", "x2"]
# How long the outsiders get to show up in a view (discovery of a member takes ~0.6 s).
OUTSIDER_WATCH_SECS = 10

START = time.monotonic()
STATE: dict = {
    "procs": {}, "namespaces": [], "workdir": None, "keep_logs": False, "ids": {}, "links": {},
}
HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[{time.monotonic() - START:7.1f}s] {msg}", flush=True)


def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), check=check, capture_output=True, text=True, timeout=timeout
    )


def ns(name: str) -> str:
    return f"{PREFIX}-{name}"


# --------------------------------------------------------------------------- topology


def setup_network(nodes: list[str], tap_nodes: set[str]) -> None:
    sh("ip", "netns", "add", HUB)
    STATE["namespaces"].append(HUB)
    sh("ip", "-n", HUB, "link", "set", "lo", "up")
    sh("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", HUB, "link", "set", "br0", "up")
    for node in nodes:
        sh("ip", "netns", "add", ns(node))
        STATE["namespaces"].append(ns(node))
        sh("ip", "-n", ns(node), "link", "set", "lo", "up")
        # The hub end is named after the node; the node end is eth0 in its namespace.
        if node in tap_nodes:
            # Two TAPs and linkem.py between them: the cable is a process we can slow down.
            sh("ip", "-n", HUB, "tuntap", "add", "dev", f"h-{node}", "mode", "tap")
            sh("ip", "-n", ns(node), "tuntap", "add", "dev", "eth0", "mode", "tap")
            params = STATE["workdir"] / f"link-{node}.json"
            params.write_text(json.dumps({"delay_ms": 0, "jitter_ms": 0, "loss_pct": 0}))
            STATE["links"][node] = params
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "linkem.py"), HUB, f"h-{node}", ns(node),
                 "eth0", str(params)],
                stdin=subprocess.DEVNULL, stderr=open(STATE["workdir"] / f"link-{node}.log", "ab"),
            )
            STATE["procs"][f"link-{node}"] = proc
        else:
            sh("ip", "-n", HUB, "link", "add", f"h-{node}", "type", "veth",
               "peer", "name", "eth0", "netns", ns(node))
        sh("ip", "-n", HUB, "link", "set", f"h-{node}", "master", "br0")
        sh("ip", "-n", HUB, "link", "set", f"h-{node}", "up")
        sh("ip", "-n", ns(node), "addr", "add", f"{ADDR[node]}/24", "dev", "eth0")
        sh("ip", "-n", ns(node), "link", "set", "eth0", "up")


def cut(node: str) -> None:
    """Unplugs the node's cable at the bridge: its packets are dropped silently."""
    sh("ip", "-n", HUB, "link", "set", f"h-{node}", "down")


def heal(node: str) -> None:
    sh("ip", "-n", HUB, "link", "set", f"h-{node}", "up")


def netem(node: str, spec: dict | None) -> None:
    """Delay/loss on both ends of the node's link (both directions), or none.

    tc netem where the kernel has it; else linkem.py's parameters (re-read on SIGHUP).
    """
    if node in STATE["links"]:
        params = spec or {"delay_ms": 0, "jitter_ms": 0, "loss_pct": 0}
        STATE["links"][node].write_text(json.dumps(params))
        STATE["procs"][f"link-{node}"].send_signal(signal.SIGHUP)
        return
    for where, dev in ((HUB, f"h-{node}"), (ns(node), "eth0")):
        if spec is None:
            sh("tc", "-n", where, "qdisc", "del", "dev", dev, "root", check=False)
        else:
            sh("tc", "-n", where, "qdisc", "replace", "dev", dev, "root", "netem",
               "delay", f"{spec['delay_ms']}ms", f"{spec['jitter_ms']}ms",
               "loss", f"{spec['loss_pct']}%")


def cleanup() -> None:
    for name, proc in list(STATE["procs"].items()):
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"warning: {name} (pid {proc.pid}) did not exit")
    STATE["procs"].clear()
    for name in reversed(STATE["namespaces"]):
        # Any process still inside one of our namespaces is ours.
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", name, check=False)
    STATE["namespaces"].clear()
    wd = STATE["workdir"]
    if wd and not STATE["keep_logs"]:
        shutil.rmtree(wd, ignore_errors=True)
        STATE["workdir"] = None


def remove_leftovers() -> None:
    """Deletes namespaces a previous, killed run of this harness left behind."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}-"):
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)


# --------------------------------------------------------------------------- processes


def spawn(name: str, node: str, argv: list[str], env: dict | None = None) -> None:
    wd: Path = STATE["workdir"]
    out = open(wd / f"{name}.log", "ab")
    # The caller's GPUMESH_*/DHT_* settings and proxies must not leak into the nodes (a proxy
    # is unreachable from the namespaces); only the log filter is taken over.
    full_env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("GPUMESH_", "DHT_", "TUNNEL_")) and "proxy" not in k.lower()
    }
    full_env["GPUMESH_LOG"] = os.environ.get("GPUMESH_LOG", "info,libp2p_gossipsub=error")
    full_env.setdefault("NO_COLOR", "1")
    full_env.update(env or {})
    # `ip netns exec` execs the command, so proc.pid is gpumesh itself.
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns(node), *argv],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
    )
    STATE["procs"][name] = proc


def kill(name: str, sig: int = signal.SIGKILL) -> None:
    proc = STATE["procs"].pop(name)
    if proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(timeout=30)


def start_gateway(role: str, bin_: str, seed_peer: str | None) -> None:
    wd: Path = STATE["workdir"]
    argv = [
        bin_, "gateway",
        "--listen", f"0.0.0.0:{HTTP_PORT}",
        "--dht-port", str(DHT_PORT),
        "--dht-identity-file", str(wd / f"{role}.key"),
        "--dht-external-addr", f"/ip4/{ADDR[role]}/tcp/{DHT_PORT}",
        "--allow-private-upstreams",
        # Bounds a request stuck on a pooled connection to a partitioned worker (default 60 s).
        "--upstream-timeout-secs", str(UPSTREAM_TIMEOUT_SECS),
    ]
    if role == "gw" and seed_peer:
        argv += ["--seed", f"/ip4/{ADDR['seed']}/tcp/{DHT_PORT}/p2p/{seed_peer}"]
    if STATE.get("psk"):
        argv += ["--network-key-file", str(STATE["psk"])]
    # The registry token is never given: the DHT is the only discovery path tested here.
    spawn(role, role, argv, env={"GPUMESH_REGISTRY_TOKEN": ""})


def start_worker(node: str, bin_: str, args: argparse.Namespace,
                 psk: Path | None | str = "network") -> None:
    """psk: the network's key file (default), None for no key, or another file."""
    wd: Path = STATE["workdir"]
    state_dir = wd / node
    state_dir.mkdir(exist_ok=True)
    argv = [
        bin_, "agent",
        "--service", SERVICE,
        "--mock-service", "--mock-listen", f"0.0.0.0:{MOCK_PORT}",
        "--mock-base-ms", "5", "--mock-per-kib-ms", "0",
        "--gpu-profile", "t4", "--fake-seed", node[1:],
        "--public-url", f"http://{ADDR[node]}:{MOCK_PORT}",
        "--bootstrap-url", f"http://{ADDR['gw']}:{HTTP_PORT}/api/dht/bootstrap",
        "--state-dir", str(state_dir),
        "--refresh-secs", str(args.refresh_secs),
        "--load-interval-ms", "1000",
    ]
    key = STATE.get("psk") if psk == "network" else psk
    if key:
        argv += ["--network-key-file", str(key)]
    spawn(node, node, argv)


def peer_id_of(bin_: str, key: Path) -> str:
    out = sh(bin_, "keygen", "--identity", str(key)).stdout
    for word in out.replace(":", " ").split():
        if word.startswith("12D3Koo"):
            return word
    raise RuntimeError(f"no peer id in keygen output: {out!r}")


# --------------------------------------------------------------------------- probes


def curl(node: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns(node), "curl", "-s", "--noproxy", "*", *args,
              check=False, timeout=timeout)


def view(gateway: str) -> set[str] | None:
    """Worker names a gateway's view holds as online (None when it does not answer)."""
    r = curl(gateway, "-m", "2", f"http://127.0.0.1:{HTTP_PORT}/api/workers", timeout=5)
    if r.returncode != 0:
        return None
    try:
        body = json.loads(r.stdout)
    except json.JSONDecodeError:
        return None
    by_url = {f"http://{ADDR[n]}:{MOCK_PORT}": n for n in ADDR if n.startswith("w")}
    online = set()
    for w in body.get("workers", []):
        name = by_url.get(w["tunnel_url"].rstrip("/"), w["tunnel_url"])
        STATE["ids"][w["id"]] = name
        if w.get("state") == "online":
            online.add(name)
    return online


def deadline_left() -> float:
    return STATE["budget"] - (time.monotonic() - START)


def wait_for(pred, what: str, limit: float) -> float | None:
    """Polls pred every 0.2 s; seconds until it held, or None after `limit`."""
    t0 = time.monotonic()
    limit = min(limit, deadline_left() - 5)
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.2)
    log(f"  timed out after {limit:.0f}s waiting for {what}")
    return None


def route(
    n: int, per_request_timeout: float = UPSTREAM_TIMEOUT_SECS + 10
) -> list[tuple[int, float, str]]:
    """n sequential POSTs through the gateway (from inside its namespace)."""
    url = f"http://127.0.0.1:{HTTP_PORT}/api/service/{SERVICE}/v1/infer"
    argv = ["-m", str(per_request_timeout), "-X", "POST", "--data", "hello",
            "-w", "%{http_code} %{time_total} %header{x-gpumesh-worker}\\n"]
    for _ in range(n):
        argv += ["-o", "/dev/null", url]
    r = curl("gw", *argv, timeout=n * per_request_timeout + 10)
    out = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.append((int(parts[0]), float(parts[1]), parts[2] if len(parts) > 2 else ""))
    return out


class Background:
    """Runs fn in a thread; join() returns its result."""

    def __init__(self, fn):
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except Exception as e:  # noqa: BLE001 — reported as "no requests", and logged
            log(f"  background traffic failed: {type(e).__name__}: {e}")
            self.result = []

    def join(self):
        self.thread.join()
        return self.result


def summarize(results: list[tuple[int, float, str]]) -> dict:
    ok = [r for r in results if r[0] == 200]
    lat = sorted(r[1] * 1000 for r in ok)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    return {
        "requests": len(results),
        "ok": len(ok),
        "statuses": sorted({r[0] for r in results}),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "max_ms": round(lat[-1], 1) if lat else None,
        "distinct_workers": len({r[2] for r in ok}),
        "served_by": sorted({STATE["ids"].get(r[2], r[2]) for r in ok}),
    }


# --------------------------------------------------------------------------- scenarios

RESULTS: dict = {"scenarios": {}, "checks": []}


def check(name: str, ok: bool, detail: str = "") -> None:
    RESULTS["checks"].append({"check": name, "ok": ok, "detail": detail})
    log(f"  {'PASS' if ok else 'FAIL'} {name} {detail}")


def med(xs: list[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return round(statistics.median(got), 2) if got else None


def record(key: str, samples: list[float | None], **extra) -> None:
    RESULTS["scenarios"][key] = {
        "samples_s": [None if s is None else round(s, 2) for s in samples],
        "median_s": med(samples),
        **extra,
    }
    log(f"  {key}: median {med(samples)} s of {samples}")


def reps(n: int, need: float):
    """Yields repetition numbers while at least `need` seconds of budget are left."""
    for i in range(n):
        if deadline_left() < need:
            log(f"  budget: {i} of {n} repetitions done, skipping the rest")
            return
        yield i


def whole(gw: str, expect: set[str]):
    return lambda: view(gw) == expect


def scenario_a(bin_: str, args: argparse.Namespace) -> None:
    log("a) baseline: start 4 workers, time until both views are whole")
    t0 = time.monotonic()
    for w in WORKERS:
        start_worker(w, bin_, args)
    full = set(WORKERS)
    t_gw = wait_for(whole("gw", full), "gateway view", 60)
    t_seed = wait_for(whole("seed", full), "seed view", 60)
    started = time.monotonic() - t0
    check("a.discovery.gateway", t_gw is not None, f"{t_gw and round(t_gw, 2)} s")
    check("a.discovery.seed", t_seed is not None, f"{started:.2f} s after start")
    res = route(40)
    s = summarize(res)
    check("a.routing", s["ok"] == 40 and s["distinct_workers"] >= 2, json.dumps(s))
    RESULTS["scenarios"]["a_discovery_gateway_s"] = t_gw and round(t_gw, 2)
    RESULTS["scenarios"]["a_discovery_seed_s"] = round(started, 2) if t_seed else None
    RESULTS["scenarios"]["a_routing"] = s
    if STATE.get("psk"):
        outsiders(bin_, args)


def outsiders(bin_: str, args: argparse.Namespace) -> None:
    """With a network key: agents without it (x1) or with another network's key (x2) reach
    the gateways' DHT port and bootstrap endpoint but never join: no view lists them."""
    log(f"a) outsiders: x1 without the network key, x2 with another key, "
        f"{OUTSIDER_WATCH_SECS} s")
    wd: Path = STATE["workdir"]
    other_key = wd / "other.psk"
    sh(bin_, "keygen", "--network-key", str(other_key))
    start_worker("x1", bin_, args, psk=None)
    start_worker("x2", bin_, args, psk=other_key)
    t0 = time.monotonic()
    seen: set[str] = set()
    polls = 0

    def refused() -> dict[str, bool]:
        out = {}
        for x in OUTSIDERS:
            text = (wd / f"{x}.log").read_text(errors="replace")
            out[x] = "every known DHT seed failed" in text and "joined the DHT" not in text
        return out

    # Watch the views for OUTSIDER_WATCH_SECS, and on until both outsiders have logged their
    # failed join (the join waits for its timeout), at most OUTSIDER_WATCH_SECS more.
    while time.monotonic() - t0 < 2 * OUTSIDER_WATCH_SECS:
        for gw in ("gw", "seed"):
            v = view(gw) or set()
            polls += 1
            seen |= {n for n in v if n not in WORKERS}
        if time.monotonic() - t0 >= OUTSIDER_WATCH_SECS and all(refused().values()):
            break
        time.sleep(0.2)
    watched = time.monotonic() - t0
    join_refused = refused()
    for x in OUTSIDERS:
        kill(x)
    check("a.outsiders_never_listed", not seen and polls > 0,
          f"{polls} view polls in {watched:.1f} s, listed: {sorted(seen) or 'none'}")
    check("a.outsiders_cannot_join", all(join_refused.values()), json.dumps(join_refused))
    RESULTS["scenarios"]["a_outsiders"] = {"view_polls": polls, "watched_s": round(watched, 1),
                                           "listed": sorted(seen), "join_refused": join_refused}


def scenario_b(args: argparse.Namespace) -> None:
    full = set(WORKERS)
    group = ["w1", "w2"]
    rest = full - set(group)
    log(f"b1) partition: cut {group} from everything, route, heal")
    detect, converge, during = [], [], []
    for i in reps(args.reps, 45):
        for w in group:
            cut(w)
        # Traffic during the cut runs beside the view polling, so detection counts from the cut.
        traffic = Background(lambda: route(20))
        detect.append(wait_for(whole("gw", rest), "gateway to drop the cut group", 40))
        during.append(summarize(traffic.join()))
        s_after = summarize(route(10))
        check(f"b1.{i}.routing_after_detect", s_after["ok"] == 10 and
              set(s_after["served_by"]) <= rest, json.dumps(s_after))
        for w in group:
            heal(w)
        converge.append(wait_for(whole("gw", full), "gateway view whole after heal", 60))
        check(f"b1.{i}.healed", converge[-1] is not None)
    # Requests already on a pooled connection to a cut worker are not retried (they may have
    # reached it); they fail after --upstream-timeout-secs. Counted, not a failed check.
    ok_during = sum(d["ok"] for d in during)
    all_during = sum(d["requests"] for d in during)
    log(f"  b1: {ok_during}/{all_during} requests ok while the cut was being detected")
    record("b1_partition_detect_s", detect)
    record("b1_partition_heal_converge_s", converge,
           routing_during_cut=during)

    log("b2) partition: cut the seed; the gateway keeps routing; heal")
    seed_heal, seed_detect = [], []
    for i in reps(args.reps, 45):
        cut("seed")
        res = summarize(route(10))
        check(f"b2.{i}.routing_without_seed", res["ok"] == 10, json.dumps(res))
        # The seed's view empties once its records expire (it hears nothing). Meanwhile the
        # gateway's view is sampled at every poll: it must stay whole throughout.
        gw_samples: list[set[str] | None] = []

        def seed_noticed() -> bool:
            gw_samples.append(view("gw"))
            return (view("seed") or set()) != full

        seed_detect.append(wait_for(seed_noticed, "seed to notice the partition", 40))
        short = [v for v in gw_samples if v != full]
        check(f"b2.{i}.gateway_view_whole_while_seed_cut", not short,
              f"{len(gw_samples) - len(short)}/{len(gw_samples)} samples whole")
        heal("seed")
        seed_heal.append(wait_for(whole("seed", full), "seed view whole after heal", 60))
        check(f"b2.{i}.seed_healed", seed_heal[-1] is not None)
    record("b2_seed_partition_detect_s", seed_detect)
    record("b2_seed_heal_converge_s", seed_heal)


def scenario_c(bin_: str, args: argparse.Namespace) -> None:
    spec = {"delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms, "loss_pct": args.loss_pct}
    how = "linkem.py" if STATE["links"] else "tc netem"
    log(f"c) {how} {spec} on both ends of every worker link")
    base = summarize(route(30))
    RESULTS["scenarios"]["c_routing_clean"] = base
    for w in WORKERS + [LATE]:
        netem(w, spec)
    try:
        slow = summarize(route(30))
        RESULTS["scenarios"]["c_routing_netem"] = slow
        check("c.routing_under_netem", slow["ok"] == 30, json.dumps(slow))
        t0 = time.monotonic()
        start_worker(LATE, bin_, args)
        t_late = wait_for(lambda: LATE in (view("gw") or set()), "late worker under netem", 60)
        check("c.discovery_under_netem", t_late is not None,
              f"{t_late and round(t_late, 2)} s from process start")
        RESULTS["scenarios"]["c_late_worker_discovery_s"] = t_late and round(t_late, 2)
        stable = wait_for(whole("gw", set(WORKERS) | {LATE}), "all 5 under netem", 30)
        check("c.view_whole_under_netem", stable is not None)
        kill(LATE, signal.SIGTERM)
        gone = wait_for(whole("gw", set(WORKERS)), "drained worker to leave", 45)
        check("c.drain_under_netem", gone is not None, f"{gone and round(gone, 2)} s")
        RESULTS["scenarios"]["c_drain_leave_s"] = gone and round(gone, 2)
    finally:
        for w in WORKERS + [LATE]:
            netem(w, None)
    RESULTS["scenarios"]["c_impairment"] = {**spec, "per_direction": True, "by": how}


def scenario_d(bin_: str, args: argparse.Namespace, seed_peer: str) -> None:
    full = set(WORKERS)
    # Quick repetitions first: when the budget runs short, the slow kill detection (d1) loses
    # repetitions, not the restarts.
    log("d3) kill -9 the gateway; restart (same identity); time until its view is whole")
    gw_ready, gw_whole = [], []
    for i in reps(args.reps, 15):
        kill("gw")
        start_gateway("gw", bin_, seed_peer)
        t0 = time.monotonic()
        gw_ready.append(wait_for(lambda: view("gw") is not None, "gateway answers", 30))
        rest = wait_for(whole("gw", full), "gateway view whole", 40)
        gw_whole.append(None if rest is None else time.monotonic() - t0)
        res = summarize(route(10))
        check(f"d3.{i}.routing_after_restart", res["ok"] == 10, json.dumps(res))
    record("d3_gateway_restart_http_up_s", gw_ready)
    record("d3_gateway_restart_view_whole_s", gw_whole)

    log("d4) SIGTERM (graceful drain) a worker on a clean link; time until it is not online")
    drained = []
    for i in reps(args.reps, 15):
        kill("w4", signal.SIGTERM)
        drained.append(wait_for(whole("gw", full - {"w4"}), "drained w4 to leave", 30))
        start_worker("w4", bin_, args)
        check(f"d4.{i}.back", wait_for(whole("gw", full), "w4 back", 30) is not None)
    record("d4_worker_drain_leave_s", drained)

    log("d2) kill -9 the seed; routing continues; restart; time until its view is whole")
    seed_back = []
    for i in reps(args.reps, 20):
        kill("seed")
        res = summarize(route(10))
        check(f"d2.{i}.routing_without_seed", res["ok"] == 10, json.dumps(res))
        start_gateway("seed", bin_, None)
        seed_back.append(wait_for(whole("seed", full), "seed view whole", 40))
    record("d2_seed_restart_converge_s", seed_back)

    log("d1) kill -9 a worker; time until the gateway drops it; restart; time until back")
    drop, back = [], []
    for i in reps(args.reps, 40):
        kill("w4")
        drop.append(wait_for(whole("gw", full - {"w4"}), "gateway to drop w4", 40))
        res = summarize(route(10))
        check(f"d1.{i}.routing_after_kill", res["ok"] == 10, json.dumps(res))
        start_worker("w4", bin_, args)
        back.append(wait_for(whole("gw", full), "w4 back in view", 40))
    record("d1_worker_kill_detect_s", drop)
    record("d1_worker_restart_visible_s", back)


# --------------------------------------------------------------------------- main


def have_netem() -> bool:
    probe = f"{PREFIX}-netem{os.getpid()}"
    sh("ip", "netns", "add", probe, check=False)
    try:
        sh("ip", "-n", probe, "link", "add", "a0", "type", "veth", "peer", "name", "b0")
        return sh("tc", "-n", probe, "qdisc", "add", "dev", "a0", "root", "netem",
                  "delay", "1ms", check=False).returncode == 0
    finally:
        sh("ip", "netns", "del", probe, check=False)


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "tc", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = f"{PREFIX}-probe{os.getpid()}"
    if sh("ip", "netns", "add", probe, check=False).returncode != 0:
        return "ip netns does not work here"
    sh("ip", "netns", "del", probe, check=False)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("GPUMESH_BIN", "target/release/gpumesh"))
    ap.add_argument("--reps", type=int, default=3, help="repetitions per timed scenario")
    ap.add_argument("--scenarios", default="abcd")
    ap.add_argument("--refresh-secs", type=int, default=6,
                    help="agent record refresh (records live twice this)")
    ap.add_argument("--delay-ms", type=int, default=50, help="netem delay per direction")
    ap.add_argument("--jitter-ms", type=int, default=0, help="netem jitter per direction")
    ap.add_argument("--loss-pct", type=float, default=5.0, help="netem loss per direction")
    ap.add_argument("--links", choices=["auto", "veth", "tap"], default="auto",
                    help="worker links: veth (+ tc netem) or TAP + linkem.py; auto = veth "
                         "when the kernel has netem")
    ap.add_argument("--budget-secs", type=float, default=280)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--no-network-key", action="store_true",
                    help="run an open DHT (default: every node shares a pnet key, and "
                         "scenario a checks that outsiders cannot join)")
    args = ap.parse_args()

    why = preflight()
    if why:
        print(f"skipped: needs root + ip netns ({why})")
        return 2
    if not os.access(args.bin, os.X_OK):
        print(f"error: {args.bin} not found; run `cargo build --release -p gpumesh` first",
              file=sys.stderr)
        return 1
    STATE["budget"] = args.budget_secs
    STATE["keep_logs"] = args.keep_logs

    def on_signal(signum, _frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    # Hard stop: even a hung probe cannot keep the harness past budget + 15 s.
    signal.alarm(int(args.budget_secs) + 15)
    atexit.register(cleanup)

    remove_leftovers()
    wd = Path(tempfile.mkdtemp(prefix="gpumesh-netns-"))
    STATE["workdir"] = wd
    # A private copy: another build replacing the binary mid-run changes nothing here.
    bin_ = str(wd / "gpumesh")
    shutil.copy2(args.bin, bin_)
    log(f"workdir {wd}; load average {os.getloadavg()}")
    try:
        links = args.links
        if links == "auto":
            links = "veth" if have_netem() else "tap"
        RESULTS["links"] = links
        log(f"worker links: {links}")
        if not args.no_network_key:
            STATE["psk"] = wd / "network.psk"
            sh(bin_, "keygen", "--network-key", str(STATE["psk"]))
        RESULTS["network_key"] = not args.no_network_key
        outsiders_net = OUTSIDERS if not args.no_network_key and "a" in args.scenarios else []
        setup_network(["gw", "seed", *WORKERS, LATE, *outsiders_net],
                      set(WORKERS + [LATE]) if links == "tap" else set())
        seed_peer = peer_id_of(bin_, wd / "seed.key")
        peer_id_of(bin_, wd / "gw.key")
        start_gateway("seed", bin_, None)
        start_gateway("gw", bin_, seed_peer)
        up = wait_for(lambda: view("gw") is not None and view("seed") is not None,
                      "gateways up", 30)
        if up is None:
            raise RuntimeError("gateways did not come up")
        if "a" in args.scenarios:
            scenario_a(bin_, args)
        else:
            for w in WORKERS:
                start_worker(w, bin_, args)
            wait_for(whole("gw", set(WORKERS)), "workers", 60)
        if "b" in args.scenarios:
            scenario_b(args)
        if "c" in args.scenarios:
            scenario_c(bin_, args)
        if "d" in args.scenarios:
            scenario_d(bin_, args, seed_peer)
    except Exception as e:  # noqa: BLE001 — report, clean up, fail
        STATE["keep_logs"] = True
        check("harness", False, f"{type(e).__name__}: {e}")
    finally:
        for name, proc in STATE["procs"].items():
            if proc.poll() is not None:
                check(f"{name}.alive", False, f"exited with {proc.returncode}")
                STATE["keep_logs"] = True
    failed = [c for c in RESULTS["checks"] if not c["ok"]]
    RESULTS["elapsed_s"] = round(time.monotonic() - START, 1)
    RESULTS["load_average_end"] = os.getloadavg()
    RESULTS["ok"] = not failed
    out = json.dumps(RESULTS, indent=2)
    if args.json:
        args.json.write_text(out + "\n")
    print(out)
    if failed:
        STATE["keep_logs"] = True
        log(f"{len(failed)} check(s) failed; logs kept in {wd}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
