#!/usr/bin/python3
"""Webhook delivery (issue #15) on a real `deeplens serve` (embedded default, built-in model) to a
local receiver (Python's ThreadingHTTPServer, answering 204 at once).

  bench/webhook_delivery.py --binary build/release/src/app/deeplens [--images 200] [--rate 20]
                            [--endpoints 10] [--burst 200]

Phase 1, latency: uploads at --rate/s to one endpoint subscribed to processing.completed;
latency = when the receiver got the delivery minus the event's `searchableAfter` (the completion's
commit, in milliseconds: figures carry +-1 ms). Phase 2, throughput: --endpoints endpoints
subscribed to image.uploaded; the receiver holds its answers while --burst uploads queue
endpoints x burst deliveries, then lets go: deliveries/s from the release to the last delivery
received (the receiver, one Python process, and the server share the machine's 2 cores).
Every signature is checked with Python's hmac. Prints the figures; bench/README.md records them."""
import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402
from latency_stats import pct, ts  # noqa: E402




class Receiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.got = []  # (time received, webhook-id, path, body, signature header, timestamp header)
        self.release = threading.Event()  # cleared: answers wait (the dispatcher's slots fill, a backlog builds)
        self.release.set()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.release.wait()
                now = time.time()
                with receiver.lock:
                    receiver.got.append((now, self.headers["webhook-id"], self.path, body,
                                         self.headers["webhook-signature"], self.headers["webhook-timestamp"]))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return
            time.sleep(0.01)
        raise RuntimeError(f"only {len(self.got)} of {n} deliveries arrived")


def create(server, url, events):
    r = server.request("POST", "/api/v1/webhooks", json.dumps({"url": url, "events": events}).encode(),
                       "application/json")
    assert r.status == 201, r.body
    return r.json()


def valid(secret, msg_id, stamp, body, header):
    key = base64.b64decode(secret[len("whsec_"):])
    want = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s.split(",", 1)[1], want) for s in header.split())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--burst", type=int, default=200)
    a = ap.parse_args()
    e2e.DEELENS_BIN = a.binary
    server = e2e.Server(extra_args=["--set", "webhooks.allow_private_networks=true",
                                    "--set", "limits.upload_rate=0"]).start()
    receiver = Receiver()
    try:
        hook = create(server, f"http://127.0.0.1:{receiver.port}/latency", ["processing.completed"])
        for i in range(a.images):
            t0 = time.time()
            r = server.upload(e2e.png_bytes(96, 64, seed=int(t0 * 1000) + i), "b.png")
            assert r.status == 202, r.body
            time.sleep(max(0, 1 / a.rate - (time.time() - t0)))
        receiver.wait(a.images)
        with receiver.lock:
            got = list(receiver.got)
        lat = [(t - ts(json.loads(body)["data"]["searchableAfter"])) * 1000 for t, _, _, body, _, _ in got]
        assert all(valid(hook["secret"], i, st, b, h) for _, i, _, b, h, st in got), "a signature did not verify"
        print(f"phase 1: {a.images} uploads at {a.rate}/s, completion commit -> delivery received")
        print(f"  n={len(lat)}  p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  max {max(lat):.2f} ms")

        server.request("DELETE", f"/api/v1/webhooks/{hook['id']}")
        hooks = [create(server, f"http://127.0.0.1:{receiver.port}/burst{i}", ["image.uploaded"])
                 for i in range(a.endpoints)]
        with receiver.lock:
            receiver.got.clear()
        receiver.release.clear()  # hold the first answers: the rest queue up behind them
        for i in range(a.burst):
            r = server.upload(e2e.png_bytes(32, 32, seed=900000 + i), "u.png")
            assert r.status == 202, r.body
        total = a.burst * a.endpoints
        deadline = time.time() + 60
        while time.time() < deadline:  # every upload's deliveries queued
            depth = server.request("GET", "/metrics").body.decode()
            queued = sum(int(float(line.split()[-1])) for line in depth.splitlines()
                         if line.startswith("deeplens_webhook_queue_depth{"))
            if queued >= total:
                break
            time.sleep(0.1)
        t_release = time.time()
        receiver.release.set()
        receiver.wait(total, timeout=300)
        with receiver.lock:
            got = list(receiver.got)
        secrets = {f"/burst{i}": h["secret"] for i, h in enumerate(hooks)}
        assert all(valid(secrets[p], i, st, b, h) for _, i, p, b, h, st in got), "a signature did not verify"
        span = got[-1][0] - t_release
        print(f"phase 2: a backlog of {a.burst} uploads x {a.endpoints} endpoints = {total} deliveries, drained")
        print(f"  {total / span:.0f} deliveries/s (release to last received, {span:.2f} s); "
              f"{len({g[1] for g in got})} distinct webhook-ids")
    finally:
        receiver.server.shutdown()
        server.cleanup()


if __name__ == "__main__":
    main()
