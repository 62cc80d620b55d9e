#!/usr/bin/env python3
"""Idle, slowloris and idle-HTTP/2 connections against one gateway, with honest traffic.

Starts `gpumesh demo` (a gateway with its default connection deadlines and caps, plus a few
mock workers) on loopback, then opens at once:
  - IDLE connections that send nothing (closed by the first-byte deadline, 10 s),
  - SLOW slowloris connections that send a request head one byte every 2 s (head deadline, 30 s),
  - H2 connections that send the HTTP/2 preface and SETTINGS, then nothing (head deadline, 30 s),
from ATTACKERS source addresses (127.0.1.1, 127.0.1.2, ...), while one honest client on
127.0.0.1 POSTs a request every 20 ms, each on a new connection. Reports, per kind, how many connections were refused
at accept, closed within their deadline (+2 s), or still open after it; the honest success
ratio; and the gateway's largest descriptor count. Stops by itself (about a minute).

Usage: python3 gateway/bench/connections.py [--bin target/release/gpumesh] [--idle 15000]
           [--slow 1000] [--h2 1000] [--attackers 100]
"""

import argparse
import json
import os
import resource
import selectors
import socket
import subprocess
import threading
import time
import http.client

PORT = 18080
DEADLINE = {"idle": 10.0, "slow": 30.0, "h2": 30.0}
SLACK = 2.0
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SLOW_HEAD = b"POST /api/service/ocr/run HTTP/1.1\r\nHost: gw\r\nX-Slow: "


def wait_ready(limit=60.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            c.request("GET", "/healthz")
            body = json.loads(c.getresponse().read())
            if body.get("workers", 0) >= 4:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit("gateway not ready")


def honest(stop, counts):
    # A new connection per request: the worst case for an honest client while caps are full.
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
            conn.request("POST", "/api/service/ocr/run", body=b"x" * 256)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            counts["ok" if resp.status == 200 else "failed"] += 1
        except OSError:
            counts["failed"] += 1
        time.sleep(0.02)


def open_attack(kind, n, attackers, sel, socks):
    for i in range(n):
        src = f"127.0.{1 + i % attackers // 250}.{1 + i % attackers % 250}"
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((src, 0))
            s.connect_ex(("127.0.0.1", PORT))
        except OSError:
            s.close()
            continue
        rec = {"kind": kind, "opened": time.time(), "closed": None, "sent": 0}
        socks[s] = rec
        sel.register(s, selectors.EVENT_READ, rec)


def first_send(socks):
    for s, rec in socks.items():
        try:
            if rec["kind"] == "h2":
                s.send(H2_PREFACE)
            elif rec["kind"] == "slow":
                s.send(SLOW_HEAD)
        except OSError:
            pass


def watch(sel, socks, until):
    last_drip = time.time()
    while time.time() < until:
        for key, _ in sel.select(timeout=0.5):
            s, rec = key.fileobj, key.data
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                rec["closed"] = time.time()
                sel.unregister(s)
                s.close()
        if time.time() - last_drip >= 2.0:
            last_drip = time.time()
            for s, rec in socks.items():
                if rec["kind"] == "slow" and rec["closed"] is None:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/gpumesh")
    ap.add_argument("--idle", type=int, default=15000)
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--h2", type=int, default=1000)
    ap.add_argument("--attackers", type=int, default=100)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gw = subprocess.Popen(
        [a.bin, "demo", "--workers", "4", "--listen", f"127.0.0.1:{PORT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready()
        stop, counts = threading.Event(), {"ok": 0, "failed": 0}
        t = threading.Thread(target=honest, args=(stop, counts), daemon=True)
        t.start()
        time.sleep(2)
        sel, socks = selectors.DefaultSelector(), {}
        started = time.time()
        # The slow kinds first, so that they hold connections before the idle flood fills the
        # cap and their own deadlines are what closes them.
        open_attack("slow", a.slow, a.attackers, sel, socks)
        open_attack("h2", a.h2, a.attackers, sel, socks)
        open_attack("idle", a.idle, a.attackers, sel, socks)
        time.sleep(0.5)
        first_send(socks)
        max_fds = [fd_count(gw.pid)]
        sampler_stop = threading.Event()

        def sample():
            while not sampler_stop.is_set():
                max_fds[0] = max(max_fds[0], fd_count(gw.pid))
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
        watch(sel, socks, started + max(DEADLINE.values()) + SLACK + 3)
        sampler_stop.set()
        stop.set()
        t.join(timeout=15)
        report = {"fd_limit": hard, "attackers": a.attackers, "gateway_max_fds": max_fds[0]}
        for kind in DEADLINE:
            recs = [r for r in socks.values() if r["kind"] == kind]
            refused = sum(1 for r in recs if r["closed"] and r["closed"] - r["opened"] < 1.0)
            in_time = sum(
                1 for r in recs if r["closed"] and 1.0 <= r["closed"] - r["opened"]
                <= DEADLINE[kind] + SLACK
            )
            report[kind] = {
                "opened": len(recs),
                "refused_at_accept": refused,
                "closed_within_deadline": in_time,
                "still_open_or_late": len(recs) - refused - in_time,
                "deadline_s": DEADLINE[kind],
            }
        total = counts["ok"] + counts["failed"]
        report["honest"] = dict(counts, success_ratio=counts["ok"] / max(total, 1))
        print(json.dumps(report, indent=2))
        for s in list(socks):
            s.close()
    finally:
        gw.terminate()
        try:
            gw.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gw.kill()


if __name__ == "__main__":
    main()
