#!/usr/bin/env python3
"""A user-space link emulator: delay and loss on one link, for kernels without sch_netem.

Some kernels (this project's Firecracker VMs among them) ship without the netem qdisc, so
`tc qdisc ... netem` fails. This process is the cable instead: it holds two TAP devices,
one in the hub namespace (a port of the bridge) and one in the node's namespace (the node's
eth0), and copies Ethernet frames between them, dropping each with probability `loss` and
holding each for `delay` (+ uniform jitter) in both directions, in order.

Plain TAPs (no IFF_VNET_HDR, no offloads) make the kernel segment and checksum every frame
before it reaches us, so frames are always <= MTU and valid on the other side.

Parameters come from a JSON file ({"delay_ms": 50, "jitter_ms": 0, "loss_pct": 5}), re-read
on SIGHUP, so the harness changes a link without tearing it down (connections survive).
Exits on SIGTERM or when either TAP goes away. Standard library only.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns {name}")
    os.close(fd)


def open_tap(netns: str, dev: str) -> int:
    """Attaches to the persistent TAP `dev` (made by `ip tuntap add`) inside `netns`."""
    enter_netns(netns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main() -> int:
    hub_ns, hub_dev, node_ns, node_dev, params_path = sys.argv[1:6]
    params = {"delay_ms": 0.0, "jitter_ms": 0.0, "loss_pct": 0.0}

    def load(*_):
        try:
            params.update(json.loads(open(params_path).read()))
        except (OSError, ValueError) as e:
            print(f"linkem: keeping old parameters: {e}", file=sys.stderr)

    load()
    # Die with the harness even if it is SIGKILLed (PR_SET_PDEATHSIG).
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    signal.signal(signal.SIGHUP, load)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    a = open_tap(hub_ns, hub_dev)
    b = open_tap(node_ns, node_dev)
    peer = {a: b, b: a}
    rng = random.Random()
    queue: list[tuple[float, int, int, bytes]] = []  # (due, order, out_fd, frame)
    order = 0
    # Frames of one direction leave in order: a frame is never due before its predecessor.
    last_due = {a: 0.0, b: 0.0}
    parent = os.getppid()
    while os.getppid() == parent:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                os.write(out, frame)
            except OSError:
                pass  # queue full, or the link is cut (device down): the frame is lost
        timeout = max(0.0, queue[0][0] - now) if queue else 1.0
        try:
            ready, _, _ = select.select([a, b], [], [], timeout)
        except InterruptedError:
            continue
        for fd in ready:
            for _ in range(64):
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if rng.random() * 100 < params["loss_pct"]:
                    continue
                delay = params["delay_ms"] + rng.uniform(0, params["jitter_ms"])
                out = peer[fd]
                due = max(time.monotonic() + delay / 1000, last_due[out])
                last_due[out] = due
                order += 1
                heapq.heappush(queue, (due, order, out, frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
