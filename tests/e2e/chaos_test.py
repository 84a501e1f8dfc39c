"""Chaos (issue #13 acceptance): 1,000 uploads while `deeplens serve` is killed with SIGKILL five
times at random moments and restarted on the same data directory. Clients retry with the same
Idempotency-Key until they get an answer, as a careful client would. Afterwards every accepted
upload has completed exactly once (one ProcessingCompletedEvent in the event log, one vector), and
once the sweeper's grace period has passed no orphan blob, vector, thumbnail or spool file remains."""
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402

UPLOADS = 1000
KILLS = 5
KEY = "dlk_" + "c" * 64
GRACE_S = 3


class Serve:
    def __init__(self, data_dir, port):
        self.data_dir, self.port, self.proc = data_dir, port, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self):
        log = open(os.path.join(self.data_dir, "serve.log"), "ab")
        env = dict(os.environ, DEEPLENS_AUTH_DEFAULT_KEY=KEY)
        self.proc = subprocess.Popen(
            [e2e.DEELENS_BIN, "serve", "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}",
             "--set", f"sweep.grace_s={GRACE_S}", "--set", "sweep.interval_s=1"],
            stdout=subprocess.PIPE, stderr=log, env=env)
        log.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"serve exited early ({self.proc.wait()}), see {self.data_dir}/serve.log")
            if line.startswith("Press Ctrl-C"):
                return
        raise RuntimeError("serve did not start in time")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdout.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc.stdout.close()

    def request(self, method, path, body=None, content_type=None, headers=None, timeout=10):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {KEY}")
        if content_type:
            req.add_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChaosTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="deeplens-chaos-")
        self.serve = Serve(self.dir, free_port())
        self.serve.start()

    def tearDown(self):
        self.serve.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_every_accepted_upload_completes_exactly_once_through_five_sigkills(self):
        rng = random.Random(13)
        accepted = {}  # upload index -> imageId
        lock = threading.Lock()
        next_upload = [0]
        retries = [0]

        def uploader():
            while True:
                with lock:
                    i = next_upload[0]
                    if i >= UPLOADS:
                        return
                    next_upload[0] += 1
                body, ctype = e2e.multipart({}, {"file": (f"chaos-{i}.png", e2e.png_bytes(16, 16, seed=100000 + i))})
                idempotency = {"Idempotency-Key": f"chaos-{i}"}
                deadline = time.time() + 120
                while time.time() < deadline:
                    try:
                        status, reply = self.serve.request("POST", "/api/v1/images/upload", body, ctype, idempotency)
                    except (urllib.error.URLError, ConnectionError, OSError):
                        with lock:
                            retries[0] += 1
                        time.sleep(0.05)  # the server is down: try again (same key)
                        continue
                    if status in (200, 202):
                        with lock:
                            accepted[i] = re.search(rb'"imageId":"(img_[^"]+)"', reply).group(1).decode()
                        break
                    if status >= 500:
                        time.sleep(0.05)
                        continue
                    raise AssertionError(f"upload {i}: {status} {reply[:200]}")

        threads = [threading.Thread(target=uploader) for _ in range(4)]
        for t in threads:
            t.start()
        kill_points = sorted(rng.sample(range(50, UPLOADS - 50), KILLS))
        for point in kill_points:
            while True:
                with lock:
                    if len(accepted) >= point:
                        break
                time.sleep(0.005)
            time.sleep(rng.random() * 0.05)
            self.serve.kill()
            time.sleep(rng.random() * 0.3)
            self.serve.start()
        for t in threads:
            t.join(timeout=600)
        self.assertEqual(len(accepted), UPLOADS)
        ids = set(accepted.values())
        self.assertEqual(len(ids), UPLOADS, "two uploads got one image id")
        print(f"{KILLS} kills at {kill_points}; {retries[0]} upload retries while the server was down",
              file=sys.stderr)

        # Every accepted upload completes.
        deadline = time.time() + 300
        pending = set(ids)
        while pending and time.time() < deadline:
            for image_id in list(pending):
                status, reply = self.serve.request("GET", f"/api/v1/images/{image_id}/status")
                self.assertEqual(status, 200, reply)
                if b'"status":"completed"' in reply:
                    pending.discard(image_id)
                elif b'"status":"failed"' in reply:
                    self.fail(f"{image_id} failed: {reply}")
            if pending:
                time.sleep(0.2)
        self.assertEqual(pending, set(), f"{len(pending)} accepted uploads never completed")

        # Past the grace period the sweeper (every second) has removed what the kills left; then
        # look at the data directory itself.
        time.sleep(GRACE_S + 2.5)
        self.serve.stop()
        db = sqlite3.connect(os.path.join(self.dir, "deeplens.db"))
        completions = dict(db.execute("SELECT key, COUNT(*) FROM bus_log WHERE topic = 'deeplens.processing.completed'"
                                      " GROUP BY key").fetchall())
        rows = {r[0] for r in db.execute("SELECT image_id FROM images")}
        db.close()
        self.assertEqual(rows, ids, "images stored that no client was told about, or accepted ones missing")
        self.assertEqual(set(completions), ids)
        self.assertEqual({n for n in completions.values()}, {1}, "an image completed more than once")
        blobs = {"images": [], "thumbnails": []}
        for dirpath, _, files in os.walk(os.path.join(self.dir, "blobs")):
            for kind in blobs:
                if f"/{kind}/" in dirpath + "/" and ".tmp" not in dirpath:
                    blobs[kind] += [f.split(".")[0] for f in files]
        self.assertEqual(sorted(blobs["images"]), sorted(ids), "an image blob without an image (or a missing one)")
        self.assertEqual(len(set(blobs["thumbnails"])), len(blobs["thumbnails"]))
        self.assertLessEqual(set(blobs["thumbnails"]), ids, "a thumbnail without an image remains")
        spool = os.path.join(self.dir, "spool")
        self.assertEqual(os.listdir(spool) if os.path.isdir(spool) else [], [], "spool files remain")
        # One vector per image: a restart reads the index back; /metrics reports its size.
        self.serve.start()
        status, metrics = self.serve.request("GET", "/metrics")
        m = re.search(rb'deeplens_index_vectors\{collection="tenant_default_builtin_vectors"\} (\d+)', metrics)
        self.assertIsNotNone(m, metrics[:500])
        self.assertEqual(int(m.group(1)), UPLOADS)


if __name__ == "__main__":
    unittest.main(verbosity=2)
