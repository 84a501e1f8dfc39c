#!/usr/bin/python3
"""Real-time push latency (issue #14): completion commit -> WebSocket frame received, against the
status-poll alternative, on a real `deeplens serve` (embedded default, built-in model).

  bench/push_latency.py --binary build/release/src/app/deeplens [--images 200] [--rate 20]
                        [--idle 1000] [--poll-ms 100]

Phase 1: one WebSocket subscribed to the tenant and one poller (GET .../status every --poll-ms per
image in flight) watch the same uploads; for each image, latency = when the client learnt of the
completion minus `searchableAfter` (the completion's commit time, written in milliseconds, so the
figures carry +-1 ms). Phase 2: --idle idle WebSockets open (RSS per connection), then uploads at
50/s with the same measurement. Prints the figures; bench/README.md records them."""
import argparse
import asyncio
import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402
from latency_stats import pct, ts  # noqa: E402
import websockets  # noqa: E402




def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def poller(server, pending, results, poll_s, stop):
    """The polling alternative: each image in flight polled every poll_s."""
    while not stop.is_set():
        for image in list(pending):
            r = server.status(image)
            if r.status == 200 and r.json()["status"] == "completed":
                results[image] = time.time() - ts(r.json()["searchableAfter"])
                pending.discard(image)
        time.sleep(poll_s)


async def measure(server, count, rate, poll_s, idle=()):
    url = server.url.replace("http://", "ws://") + "/api/v1/ws"
    ws = await websockets.connect(url, extra_headers={"Authorization": f"Bearer {server.key}"}, max_size=None)
    await ws.send(json.dumps({"type": "subscribe", "id": 1, "topic": "tenant"}))
    json.loads(await ws.recv())
    push, poll, pending = {}, {}, set()
    stop = threading.Event()
    t = threading.Thread(target=poller, args=(server, pending, poll, poll_s, stop), daemon=True)
    t.start()

    async def reader():
        while len(push) < count:
            m = json.loads(await ws.recv())
            if m.get("event") == "StatusChanged" and m["data"]["status"] == "completed":
                push[m["data"]["imageId"]] = time.time() - ts(m["data"]["searchableAfter"])

    task = asyncio.create_task(reader())
    loop = asyncio.get_running_loop()
    for i in range(count):
        t0 = time.time()
        r = await loop.run_in_executor(None, server.upload, e2e.png_bytes(96, 64, seed=int(t0 * 1000) + i), "b.png")
        pending.add(r.json()["imageId"])
        await asyncio.sleep(max(0, 1 / rate - (time.time() - t0)))
    await asyncio.wait_for(task, 120)
    deadline = time.time() + 30
    while pending and time.time() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await ws.close()
    return [v * 1000 for v in push.values()], [v * 1000 for v in poll.values()]


def server_lag(server):
    """The server's own deeplens_push_lag_seconds histogram: cumulative share of completions per bucket."""
    text = server.request("GET", "/metrics").body.decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith("deeplens_push_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = int(float(line.split()[-1]))
    total = buckets.get("+Inf", 0)
    return ", ".join(f"<= {float(le) * 1000:g} ms: {100 * n / total:.1f}%" for le, n in buckets.items()
                     if le != "+Inf" and float(le) <= 0.025) if total else "no data"


def report(name, values):
    print(f"{name:40s} n={len(values):4d}  p50 {pct(values, 50):7.2f} ms  p99 {pct(values, 99):7.2f} ms  "
          f"max {max(values):7.2f} ms")


async def open_idle(server, n):
    url = server.url.replace("http://", "ws://") + "/api/v1/ws"
    conns = []
    for _ in range(n):
        conns.append(await websockets.connect(url, extra_headers={"Authorization": f"Bearer {server.key}"},
                                              ping_interval=None))
    return conns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--poll-ms", type=int, default=100)
    a = ap.parse_args()
    e2e.DEELENS_BIN = a.binary
    server = e2e.Server(extra_args=["--set", f"server.max_connections_per_client={a.idle + 100}",
                                    "--set", f"push.max_connections_per_tenant={a.idle + 100}"]).start()
    try:
        push, poll = asyncio.run(measure(server, a.images, a.rate, a.poll_ms / 1000))
        print(f"phase 1: {a.images} uploads at {a.rate}/s, completion commit -> client knows")
        report("WebSocket push", push)
        report(f"status poll every {a.poll_ms} ms", poll)
        print(f"  server side, commit -> push published: {server_lag(server)}")

        async def phase2():
            before = rss_kib(server.proc.pid)
            conns = await open_idle(server, a.idle)
            await asyncio.sleep(1)
            after = rss_kib(server.proc.pid)
            push2, _ = await measure(server, a.images, 50, 1.0)
            for c in conns:
                await c.close()
            return before, after, push2

        before, after, push2 = asyncio.run(phase2())
        print(f"phase 2: {a.idle} idle WebSockets: RSS {before} -> {after} KiB, "
              f"{(after - before) / a.idle:.1f} KiB per connection")
        report(f"push with {a.idle} idle, uploads at 50/s", push2)
        print(f"  server side, both phases: {server_lag(server)}")
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
