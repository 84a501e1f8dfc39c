#!/usr/bin/python3
"""End to end: the operator API behind the web UI's jobs page, and the UI's own files.

A `deeplens serve` with a remote model whose service is down: its images are retried, then
dead-lettered; GET /api/v1/dead-letters shows them (retrying ones with their next attempt), per
tenant; replaying one or all after the service comes up completes them; GET /api/v1/jobs counts
the stages' work. GET / and /ui/{file} serve the UI with its CSP and ETag, no key needed.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = os.path.join(HERE, "..", "support", "fake_extraction_service.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_tenant(server, slug):
    r = subprocess.run([e2e.DEELENS_BIN, "tenants", "create", slug, "--data-dir", server.data_dir],
                       capture_output=True, text=True, env=server.env, timeout=60)
    assert r.returncode == 0, r.stderr
    return re.search(r"api key: (dlk_[0-9a-f]+)", r.stdout).group(1)


def wait_for(predicate, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class JobsApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.server = e2e.Server()
        config = os.path.join(cls.server.data_dir, "deeplens.toml")
        with open(config, "w") as f:
            f.write(f'''[pipeline]
max_attempts = 2
backoff_ms = 1500

[[models]]
name = "remote"
kind = "remote"
url = "http://127.0.0.1:{cls.port}/ok/dim/16"
dimension = 16
timeout_ms = 2000
''')
        cls.server.extra_args = ["--config", config]
        cls.server.start()
        cls.service = None

    @classmethod
    def tearDownClass(cls):
        cls.stop_service()
        cls.server.cleanup()

    @classmethod
    def start_service(cls):
        cls.service = subprocess.Popen(["/usr/bin/python3", SERVICE, "--port", str(cls.port)], stdout=subprocess.PIPE)
        assert cls.service.stdout.readline().startswith(b"PORT")

    @classmethod
    def stop_service(cls):
        if cls.service:
            cls.service.terminate()
            cls.service.wait()
            cls.service.stdout.close()
            cls.service = None

    def get(self, path, key="default"):
        r = self.server.request("GET", path, key=key)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def upload(self, name, model):
        r = self.server.upload(e2e.real_photo(name), filename=name,
                               fields={"processingOptions": json.dumps({"models": [model]})})
        self.assertEqual(r.status, 202, r.body)
        return r.json()["imageId"]

    def test_failed_images_are_listed_per_tenant_retried_and_replayed(self):
        ok = self.upload("astronaut.png", "builtin")
        self.server.wait_status(ok, ("completed",))
        broken = self.upload("chelsea.png", "remote")

        # First attempt failed: it waits for the second, with the error and when it is due.
        retrying = wait_for(lambda: self.get("/api/v1/dead-letters")["retrying"], "a retrying image")
        self.assertEqual(len(retrying), 1)
        r = retrying[0]
        self.assertEqual((r["imageId"], r["stage"], r["model"], r["attempt"], r["maxAttempts"]),
                         (broken, "feature_extraction", "remote", 2, 2))
        self.assertRegex(r["nextAttemptAt"], r"^\d{4}-\d\d-\d\dT")
        self.assertRegex(r["lastError"] or "", "(?i)refused|unavailable|running")

        # Second attempt failed too: a dead letter, and nothing retrying.
        letters = wait_for(lambda: self.get("/api/v1/dead-letters")["deadLetters"], "a dead letter")
        self.assertEqual(len(letters), 1)
        letter = letters[0]
        self.assertEqual((letter["imageId"], letter["stage"], letter["attempts"]), (broken, "feature_extraction", 2))
        self.assertTrue(letter["errorMessage"])
        self.assertEqual(self.get("/api/v1/dead-letters")["retrying"], [])
        self.assertEqual(self.server.status(broken).json()["status"], "failed")

        # Another tenant sees none of it and cannot replay it.
        other = new_tenant(self.server, "jobs-other")
        self.assertEqual(self.get("/api/v1/dead-letters", key=other), {"deadLetters": [], "retrying": []})
        self.assertEqual(self.get("/api/v1/jobs", key=other)["deadLetters"], 0)
        r = self.server.request("POST", f"/api/v1/dead-letters/{letter['id']}/replay", key=other)
        self.assertEqual((r.status, r.json()["error"]["code"]), (404, "DEAD_LETTER_NOT_FOUND"))
        self.assertEqual(self.server.request("POST", "/api/v1/dead-letters/replay", key=other).json(),
                         {"replayed": 0, "failed": []})

        jobs = self.get("/api/v1/jobs")
        self.assertEqual(jobs["deadLetters"], 1)
        stages = {s["stage"]: s for s in jobs["stages"]}
        self.assertEqual(set(stages), {"orchestrate", "thumbnail", "extract", "index", "notify", "retry"})
        self.assertEqual([lane["lane"] for lane in stages["extract"]["lanes"]], ["high", "normal", "low"])
        self.assertEqual(stages["extract"]["queued"], 0)
        self.assertGreaterEqual(stages["extract"]["completedLastMinute"], 1)  # the builtin image
        self.assertEqual(stages["extract"]["inFlight"], 0)
        self.assertNotIn("lanes", stages["index"])

        # The cause is fixed; replaying completes it, once.
        self.start_service()
        try:
            r = self.server.request("POST", f"/api/v1/dead-letters/{letter['id']}/replay")
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json(), {"id": letter["id"], "imageId": broken, "replayed": True})
            r = self.server.request("POST", f"/api/v1/dead-letters/{letter['id']}/replay")
            self.assertEqual((r.status, r.json()["error"]["code"]), (409, "ALREADY_REPLAYED"))
            self.assertEqual(self.server.wait_status(broken)["status"], "completed")
            self.assertEqual(self.get("/api/v1/dead-letters")["deadLetters"], [])
        finally:
            self.stop_service()

        # Two more fail; "retry all" replays both.
        more = [self.upload(n, "remote") for n in ("coffee.png", "rocket.jpg")]
        wait_for(lambda: len(self.get("/api/v1/dead-letters")["deadLetters"]) == 2, "two dead letters")
        self.start_service()
        try:
            r = self.server.request("POST", "/api/v1/dead-letters/replay")
            self.assertEqual(r.json(), {"replayed": 2, "failed": []})
            for image in more:
                self.assertEqual(self.server.wait_status(image)["status"], "completed")
        finally:
            self.stop_service()

    def test_bad_dead_letter_ids_are_404_with_a_json_body(self):
        for bad in ("abc", "0", "-1", "99999999", "1" * 30):
            r = self.server.request("POST", f"/api/v1/dead-letters/{bad}/replay")
            self.assertEqual((r.status, r.json()["error"]["code"]), (404, "DEAD_LETTER_NOT_FOUND"), bad)
        r = self.server.request("GET", "/api/v1/dead-letters?limit=0")
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, "INVALID_REQUEST"))
        self.assertEqual(self.server.request("GET", "/api/v1/jobs", key=None).status, 401)

    def test_the_ui_is_served_with_its_csp_and_revalidated_by_etag(self):
        page = self.server.request("GET", "/", key=None)
        self.assertEqual(page.status, 200)
        self.assertTrue(page.headers["Content-Type"].startswith("text/html"))
        csp = page.headers["Content-Security-Policy"]
        self.assertIn("script-src 'self'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertIn(b'<script type="module" src="/ui/app.js">', page.body)
        self.assertNotIn(b"<script>", page.body)  # no inline script
        script = self.server.request("GET", "/ui/app.js", key=None)
        self.assertEqual(script.status, 200)
        self.assertTrue(script.headers["Content-Type"].startswith("text/javascript"))
        self.assertEqual(script.headers["X-Content-Type-Options"], "nosniff")
        same = self.server.request("GET", "/ui/app.js", key=None, headers={"If-None-Match": script.headers["ETag"]})
        self.assertEqual((same.status, same.body), (304, b""))
        self.assertNotEqual(self.server.request("GET", "/ui/app.css", key=None).headers["ETag"], script.headers["ETag"])
        missing = self.server.request("GET", "/ui/nope.js", key=None)
        self.assertEqual((missing.status, missing.json()["error"]["code"]), (404, "NOT_FOUND"))
        self.assertEqual(self.server.request("GET", "/ui/..%2fapi.js", key=None).status, 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
