"""Webhooks end to end (issue #15): a real `deeplens serve` delivering to a real receiver process
(Python's http.server in this process's threads) that checks every signature with Python's own
hmac — an implementation independent of ours (Standard Webhooks 1.0)."""
import base64
import hashlib
import hmac
import http.server
import json
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402

SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "..", "schemas")
FAST = ["--set", "webhooks.allow_private_networks=true", "--set", "webhooks.retry_schedule_s=1,1,2,2,4,4,4,4,4,4,4,4,4,4",
        "--set", "webhooks.timeout_s=2"]


def verify(secrets, msg_id, timestamp, body, header):
    """Which of `secrets` signed (id, timestamp, body) in this webhook-signature header."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    given = [s.split(",", 1)[1] for s in header.split() if s.startswith("v1,")]
    out = []
    for secret in secrets:
        key = base64.b64decode(secret[len("whsec_"):])
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(g, expected) for g in given):
            out.append(secret)
    return out


class Receiver:
    """An HTTP endpoint that records every delivery. `behaviour(msg_id, attempt, handler)` may answer
    itself and return True; otherwise the receiver answers 204."""

    def __init__(self, secrets):
        self.secrets = secrets  # list, may grow (rotation)
        self.lock = threading.Lock()
        self.deliveries = []  # dicts: id, timestamp, body, json, valid, signers
        self.attempts = {}
        self.behaviour = None
        self.port = 0
        self.server = None
        self.start()

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                msg_id = self.headers.get("webhook-id", "")
                ts = self.headers.get("webhook-timestamp", "")
                signers = verify(receiver.secrets, msg_id, ts, body, self.headers.get("webhook-signature", ""))
                with receiver.lock:
                    attempt = receiver.attempts.get(msg_id, 0) + 1
                    receiver.attempts[msg_id] = attempt
                    receiver.deliveries.append({
                        "id": msg_id, "timestamp": ts, "body": body, "json": json.loads(body), "signers": signers,
                        "valid": bool(signers) and abs(time.time() - int(ts)) < 300,
                        "content_type": self.headers.get("Content-Type"), "user_agent": self.headers.get("User-Agent"),
                        "signature": self.headers.get("webhook-signature", "")})
                    behaviour = receiver.behaviour
                if behaviour and behaviour(msg_id, attempt, self):
                    return
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def of_type(self, event_type):
        with self.lock:
            return [d for d in self.deliveries if d["json"].get("eventType") == event_type]

    def wait(self, predicate, timeout=60, what="deliveries"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if predicate(list(self.deliveries)):
                    return
            time.sleep(0.05)
        with self.lock:
            got = [(d["id"], d["json"].get("eventType")) for d in self.deliveries]
        raise AssertionError(f"timed out waiting for {what}; received {len(got)}: {got[:40]}")


def create_webhook(server, url, events, **extra):
    return server.request("POST", "/api/v1/webhooks", json.dumps({"url": url, "events": events, **extra}).encode(),
                          "application/json")


def upload_all(server, n, seed):
    ids = []
    for i in range(n):
        r = server.upload(e2e.png_bytes(48 + i % 5, 40, seed=seed + i), filename=f"w{seed + i}.png")
        assert r.status == 202, r.body
        ids.append(r.json()["imageId"])
    return ids


def completed_image_ids(deliveries):
    return {d["json"]["data"]["imageId"] for d in deliveries}


class WebhooksTest(unittest.TestCase):
    def setUp(self):
        self.server = e2e.Server(extra_args=FAST).start()
        self.receiver = None

    def tearDown(self):
        if self.receiver:
            self.receiver.stop()
        self.server.cleanup()

    def register(self, events=("processing.completed",), receiver=None):
        r = create_webhook(self.server, (receiver or self.receiver).url, list(events), description="e2e")
        self.assertEqual(r.status, 201, r.body)
        hook = r.json()
        self.assertTrue(hook["secret"].startswith("whsec_"))
        self.assertEqual(len(base64.b64decode(hook["secret"][6:])), 32)
        return hook

    def test_twenty_uploads_give_twenty_signed_completions_and_failed_first_attempts_come_again_with_the_same_id(self):
        self.receiver = Receiver([])
        hook = self.register()
        self.receiver.secrets.append(hook["secret"])

        def fail_first(msg_id, attempt, h):
            if attempt == 1:
                h.send_response(500)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return True
            return False
        self.receiver.behaviour = fail_first
        ids = upload_all(self.server, 20, seed=100)
        self.receiver.wait(lambda ds: len({d["id"] for d in ds if self.receiver.attempts.get(d["id"], 0) >= 2}) >= 20,
                           timeout=90, what="20 second attempts")
        completed = self.receiver.of_type("processing.completed")
        self.assertTrue(all(d["valid"] for d in completed), [d["signature"] for d in completed if not d["valid"]])
        self.assertEqual(completed_image_ids(completed), set(ids))
        by_id = {}
        for d in completed:
            by_id.setdefault(d["id"], []).append(d)
        self.assertEqual(len(by_id), 20)  # one delivery id per image
        for msg_id, attempts in by_id.items():
            self.assertGreaterEqual(len(attempts), 2, msg_id)
            self.assertEqual(len({a["body"] for a in attempts}), 1)  # the same body on every attempt
        d = completed[0]
        self.assertEqual(d["content_type"], "application/json")
        self.assertTrue(d["user_agent"].startswith("DeepLens/"), d["user_agent"])
        self.assertTrue(d["id"].startswith("msg_"))
        # The body is the event as on the bus: it validates against the event's schema.
        import jsonschema
        with open(os.path.join(SCHEMAS, "processing.completed.schema.json")) as f:
            schema = json.load(f)
        for d in completed:
            jsonschema.validate(d["json"], schema)
        # The delivery log shows the failed attempt and the success.
        log = self.server.request("GET", f"/api/v1/webhooks/{hook['id']}/deliveries?status=succeeded&limit=100").json()
        self.assertEqual(len(log["deliveries"]), 20)
        entry = log["deliveries"][0]
        self.assertEqual(entry["status"], "succeeded")
        self.assertGreaterEqual(entry["attemptCount"], 2)
        self.assertEqual(entry["attempts"][0]["httpStatus"], 500)
        self.assertIn("500", entry["attempts"][0]["error"])
        self.assertIsNone(entry["attempts"][-1]["error"])
        # Paging: 20 deliveries, 7 per page.
        seen, cursor = [], ""
        while True:
            page = self.server.request(
                "GET", f"/api/v1/webhooks/{hook['id']}/deliveries?limit=7" + (f"&cursor={cursor}" if cursor else "")).json()
            seen += [x["id"] for x in page["deliveries"]]
            cursor = page["nextCursor"]
            if not cursor:
                break
        self.assertEqual(len(seen), 20)
        self.assertEqual(len(set(seen)), 20)
        metrics = self.server.request("GET", "/metrics").body.decode()
        self.assertRegex(metrics, r'deeplens_webhook_deliveries_total\{outcome="succeeded"\} 2\d')
        self.assertRegex(metrics, r'deeplens_webhook_deliveries_total\{outcome="retrying"\} 2\d')

    def test_a_receiver_down_for_30_seconds_gets_everything_after_it_returns(self):
        self.receiver = Receiver([])
        hook = self.register(events=("image.uploaded", "processing.completed"))
        self.receiver.secrets.append(hook["secret"])
        self.receiver.stop()
        down_at = time.time()
        ids = upload_all(self.server, 6, seed=300)
        for i in ids:
            self.server.wait_status(i)
        deadline = time.time() + 20  # every delivery queued, each with a failed attempt behind it
        while True:
            pending = self.server.request("GET", f"/api/v1/webhooks/{hook['id']}/deliveries?status=pending").json()
            tried = [d for d in pending["deliveries"] if d["attempts"] and d["attempts"][-1]["error"]]
            if len(tried) == 12 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(len(pending["deliveries"]), 12)
        self.assertEqual(len(tried), 12, pending)
        self.assertIn("connect", tried[0]["attempts"][-1]["error"])
        time.sleep(max(0, 30 - (time.time() - down_at)))
        self.receiver.start()  # the same port
        self.receiver.wait(lambda ds: len({d["id"] for d in ds}) >= 12, timeout=60, what="12 deliveries")
        self.assertEqual(completed_image_ids(self.receiver.of_type("processing.completed")), set(ids))
        self.assertEqual(completed_image_ids(self.receiver.of_type("image.uploaded")), set(ids))
        self.assertTrue(all(d["valid"] for d in self.receiver.deliveries))

    def test_kill_9_with_deliveries_pending_delivers_all_after_restart(self):
        self.receiver = Receiver([])
        hook = self.register()
        self.receiver.secrets.append(hook["secret"])
        self.receiver.stop()
        ids = upload_all(self.server, 8, seed=500)
        for i in ids:
            self.server.wait_status(i)
        self.server.stop(sig=signal.SIGKILL)
        self.receiver.start()
        self.server.start()
        self.receiver.wait(lambda ds: len({d["json"]["data"]["imageId"] for d in ds}) >= 8, timeout=60,
                           what="8 completions after the restart")
        completed = self.receiver.of_type("processing.completed")
        self.assertEqual(completed_image_ids(completed), set(ids))
        # Duplicates only with the same webhook-id: one id per image.
        per_image = {}
        for d in completed:
            per_image.setdefault(d["json"]["data"]["imageId"], set()).add(d["id"])
        self.assertTrue(all(len(v) == 1 for v in per_image.values()), per_image)
        self.assertTrue(all(d["valid"] for d in completed))

    def test_rotation_signs_with_both_secrets_during_the_overlap_and_delete_and_test_events_arrive(self):
        self.receiver = Receiver([])
        hook = self.register(events=("image.deleted",))
        old = hook["secret"]
        rotated = self.server.request("POST", f"/api/v1/webhooks/{hook['id']}/rotate-secret", b"{}", "application/json")
        self.assertEqual(rotated.status, 200, rotated.body)
        new = rotated.json()["secret"]
        self.assertNotEqual(old, new)
        self.assertIsNotNone(rotated.json()["previousSecretExpiresAt"])
        self.receiver.secrets.extend([old, new])
        t = self.server.request("POST", f"/api/v1/webhooks/{hook['id']}/test")
        self.assertEqual(t.status, 202, t.body)
        self.receiver.wait(lambda ds: any(d["json"]["eventType"] == "webhook.test" for d in ds), what="the test event")
        test = self.receiver.of_type("webhook.test")[0]
        self.assertEqual(test["id"], t.json()["id"])
        self.assertEqual(sorted(test["signers"]), sorted([old, new]))
        self.assertEqual(len(test["signature"].split()), 2)
        # image.deleted, signed by both; only subscribed types arrive (no upload or completion).
        [image] = upload_all(self.server, 1, seed=700)
        self.server.wait_status(image)
        self.assertEqual(self.server.request("DELETE", f"/api/v1/images/{image}").status, 204)
        self.receiver.wait(lambda ds: any(d["json"]["eventType"] == "image.deleted" for d in ds), what="image.deleted")
        deleted = self.receiver.of_type("image.deleted")[0]
        self.assertEqual(deleted["json"]["data"]["imageId"], image)
        import jsonschema
        with open(os.path.join(SCHEMAS, "webhooks", "image.deleted.schema.json")) as f:
            jsonschema.validate(deleted["json"], json.load(f))
        self.assertEqual(sorted(deleted["signers"]), sorted([old, new]))
        self.assertEqual({d["json"]["eventType"] for d in self.receiver.deliveries}, {"webhook.test", "image.deleted"})
        # Rotate again with no overlap: only the newest secret signs.
        again = self.server.request("POST", f"/api/v1/webhooks/{hook['id']}/rotate-secret",
                                    json.dumps({"overlapSeconds": 0}).encode(), "application/json").json()
        self.receiver.secrets.append(again["secret"])
        t2 = self.server.request("POST", f"/api/v1/webhooks/{hook['id']}/test").json()
        self.receiver.wait(lambda ds: any(d["id"] == t2["id"] for d in ds), what="the second test event")
        second = [d for d in self.receiver.deliveries if d["id"] == t2["id"]][0]
        self.assertEqual(second["signers"], [again["secret"]])

    def test_crud_validation_and_tenant_isolation(self):
        s = self.server
        for url, code in [("ftp://example.com/x", "INVALID_URL"), ("not a url", "INVALID_URL"),
                          ("http://user:pw@example.com/", "INVALID_URL"), ("", "INVALID_URL"),
                          ("http://example.com/" + "a" * 3000, "INVALID_URL")]:
            r = create_webhook(s, url, ["processing.completed"])
            self.assertEqual(r.status, 400, (url, r.body))
            self.assertEqual(r.json()["error"]["code"], code, r.body)
        r = create_webhook(s, "http://127.0.0.1:9/x", ["processing.finished"])
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, "UNKNOWN_EVENT_TYPE"))
        self.assertIn("processing.finished", r.json()["error"]["message"])
        r = create_webhook(s, "http://127.0.0.1:9/x", [])
        self.assertEqual(r.status, 400)
        r = s.request("POST", "/api/v1/webhooks", b"[1,2", "application/json")
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, "INVALID_JSON"))
        r = create_webhook(s, "http://127.0.0.1:9/x", ["image.uploaded"], secret="mine")
        self.assertEqual((r.status, r.json()["error"]["code"]), (400, "UNKNOWN_FIELD"))
        # CRUD.
        hook = create_webhook(s, "http://127.0.0.1:9/x", ["image.uploaded"]).json()
        self.assertEqual(s.request("GET", f"/api/v1/webhooks/{hook['id']}").json()["url"], "http://127.0.0.1:9/x")
        self.assertNotIn("secret", s.request("GET", f"/api/v1/webhooks/{hook['id']}").json())
        p = s.request("PATCH", f"/api/v1/webhooks/{hook['id']}",
                      json.dumps({"enabled": False, "events": ["image.deleted", "processing.failed"]}).encode(),
                      "application/json")
        self.assertEqual(p.status, 200, p.body)
        self.assertEqual((p.json()["enabled"], p.json()["events"]), (False, ["image.deleted", "processing.failed"]))
        r = s.request("PATCH", f"/api/v1/webhooks/{hook['id']}", json.dumps({"url": "gopher://x"}).encode(),
                      "application/json")
        self.assertEqual(r.status, 400)
        self.assertEqual(s.request("POST", f"/api/v1/webhooks/{hook['id']}/test").status, 409)  # disabled
        # Another tenant sees none of it.
        out = s.run_cli("tenants", "create", "globex").stdout
        other = [w for w in out.split() if w.startswith("dlk_")][0]
        self.assertEqual(s.request("GET", f"/api/v1/webhooks/{hook['id']}", key=other).status, 404)
        self.assertEqual(s.request("GET", "/api/v1/webhooks", key=other).json()["webhooks"], [])
        self.assertEqual(s.request("DELETE", f"/api/v1/webhooks/{hook['id']}", key=other).status, 404)
        self.assertEqual(s.request("DELETE", f"/api/v1/webhooks/{hook['id']}").status, 204)
        self.assertEqual(s.request("GET", f"/api/v1/webhooks/{hook['id']}").status, 404)
        # The per-tenant limit (default 50).
        for i in range(50):
            r = create_webhook(s, f"http://127.0.0.1:9/{i}", ["image.uploaded"], description=str(i))
            self.assertEqual(r.status, 201, r.body)
        r = create_webhook(s, "http://127.0.0.1:9/51", ["image.uploaded"])
        self.assertEqual((r.status, r.json()["error"]["code"]), (403, "WEBHOOK_LIMIT_REACHED"))
        self.assertEqual(len(s.request("GET", "/api/v1/webhooks").json()["webhooks"]), 50)
        self.assertEqual(s.request("GET", "/api/v1/webhooks", key=None).status, 401)

    def test_another_tenants_events_never_reach_an_endpoint(self):
        self.receiver = Receiver([])
        hook = self.register(events=("image.uploaded",))
        self.receiver.secrets.append(hook["secret"])
        out = self.server.run_cli("tenants", "create", "initech").stdout
        other = [w for w in out.split() if w.startswith("dlk_")][0]
        for i in range(3):
            self.assertEqual(self.server.upload(e2e.png_bytes(40, 40, seed=900 + i), key=other).status, 202)
        [mine] = upload_all(self.server, 1, seed=950)
        self.receiver.wait(lambda ds: len(ds) >= 1, what="this tenant's upload")
        time.sleep(1.5)
        self.assertEqual([d["json"]["data"]["imageId"] for d in self.receiver.deliveries], [mine])
        self.assertEqual(self.receiver.deliveries[0]["json"]["tenantId"], "default")

    def test_bad_receivers_end_cleanly_in_the_delivery_log(self):
        """Hangs, trickles, 10 MB answers, redirects and 410 each end as an attempt with a reason."""
        self.receiver = Receiver([])
        behaviours = {}

        def misbehave(msg_id, attempt, h):
            kind = behaviours.get(h.path)
            if kind == "hang":
                time.sleep(4)
                return True
            if kind == "trickle":
                try:
                    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(40):
                        h.wfile.write(b"X-Slow: 1\r\n")
                        h.wfile.flush()
                        time.sleep(0.1)
                except OSError:  # the sender gave up first, as it should
                    pass
                return True
            if kind == "huge":
                h.send_response(200)
                h.send_header("Content-Length", str(10 * 1024 * 1024))
                h.end_headers()
                try:
                    chunk = b"x" * 65536
                    for _ in range(160):
                        h.wfile.write(chunk)
                except OSError:
                    pass
                return True
            if kind == "redirect":
                h.send_response(302)
                h.send_header("Location", "http://127.0.0.1:1/elsewhere")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return True
            if kind == "gone":
                h.send_response(410)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return True
            return False
        self.receiver.behaviour = misbehave
        hooks = {}
        for kind in ("hang", "trickle", "huge", "redirect", "gone"):
            path = f"/{kind}"
            behaviours[path] = kind
            r = create_webhook(self.server, f"http://127.0.0.1:{self.receiver.port}{path}", ["image.deleted"])
            self.assertEqual(r.status, 201, r.body)
            hooks[kind] = r.json()
            self.assertEqual(self.server.request("POST", f"/api/v1/webhooks/{hooks[kind]['id']}/test").status, 202)

        def first_attempt(kind):
            deadline = time.time() + 30
            while time.time() < deadline:
                ds = self.server.request("GET", f"/api/v1/webhooks/{hooks[kind]['id']}/deliveries").json()["deliveries"]
                if ds and ds[0]["attempts"]:
                    return ds[0]
                time.sleep(0.2)
            self.fail(f"no attempt logged for {kind}")
        hang = first_attempt("hang")
        self.assertIsNone(hang["attempts"][0]["httpStatus"])
        self.assertIn("2000 ms", hang["attempts"][0]["error"])
        self.assertEqual(hang["status"], "pending")  # retried later
        trickle = first_attempt("trickle")
        self.assertIn("2000 ms", trickle["attempts"][0]["error"])
        self.assertLess(trickle["attempts"][0]["durationMs"], 3500)
        huge = first_attempt("huge")
        self.assertEqual((huge["status"], huge["attempts"][0]["httpStatus"]), ("succeeded", 200))
        redirect = first_attempt("redirect")
        self.assertEqual(redirect["attempts"][0]["httpStatus"], 302)
        self.assertIn("redirects are not followed", redirect["attempts"][0]["error"])
        gone = first_attempt("gone")
        self.assertEqual((gone["status"], gone["attempts"][0]["httpStatus"]), ("failed", 410))
        endpoint = self.server.request("GET", f"/api/v1/webhooks/{hooks['gone']['id']}").json()
        self.assertFalse(endpoint["enabled"])
        self.assertIn("410", endpoint["disabledReason"])
        # The server stayed healthy throughout.
        self.assertEqual(self.server.request("GET", "/healthz").status, 200)


class DisableAfterTest(unittest.TestCase):
    """An endpoint failing continuously for webhooks.disable_after_s is disabled, and says why."""

    def test_an_endpoint_that_keeps_failing_is_disabled_with_its_reason(self):
        server = e2e.Server(extra_args=FAST + ["--set", "webhooks.disable_after_s=3"]).start()
        receiver = Receiver([])

        def fail(msg_id, attempt, h):
            h.send_response(500)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return True
        receiver.behaviour = fail
        try:
            hook = create_webhook(server, receiver.url, ["image.uploaded"]).json()
            upload_all(server, 2, seed=1200)
            deadline = time.time() + 30
            while time.time() < deadline:
                got = server.request("GET", f"/api/v1/webhooks/{hook['id']}").json()
                if not got["enabled"]:
                    break
                time.sleep(0.2)
            self.assertFalse(got["enabled"], got)
            self.assertIn("failing continuously since", got["disabledReason"])
            self.assertIsNotNone(got["failingSince"])
            # Nothing more is sent while disabled; enabling it again starts afresh.
            with receiver.lock:
                sent = len(receiver.deliveries)
            time.sleep(2)
            with receiver.lock:
                self.assertEqual(len(receiver.deliveries), sent)
            receiver.behaviour = None
            r = server.request("PATCH", f"/api/v1/webhooks/{hook['id']}", json.dumps({"enabled": True}).encode(),
                               "application/json")
            self.assertEqual((r.json()["enabled"], r.json()["disabledReason"]), (True, None))
            deadline = time.time() + 30
            while time.time() < deadline:
                ok = server.request("GET", f"/api/v1/webhooks/{hook['id']}/deliveries?status=succeeded").json()
                if len(ok["deliveries"]) == 2:
                    break
                time.sleep(0.2)
            self.assertEqual(len(ok["deliveries"]), 2, "both deliveries go out once the endpoint is enabled again")
        finally:
            receiver.stop()
            server.cleanup()


class PrivateNetworkTest(unittest.TestCase):
    """Without webhooks.allow_private_networks, internal addresses are refused at creation."""

    def test_private_loopback_link_local_and_metadata_urls_are_refused_naming_the_rule(self):
        server = e2e.Server().start()
        try:
            for url, why in [("http://127.0.0.1:8080/hook", "loopback"), ("http://10.1.2.3/hook", "private"),
                             ("http://192.168.0.10/hook", "private"), ("http://169.254.169.254/latest", "metadata"),
                             ("http://169.254.10.1/", "link-local"), ("http://[::1]:9/", "loopback"),
                             ("http://localhost:9/", "loopback"), ("http://0.0.0.0:9/", "unspecified"),
                             ("http://[::ffff:10.0.0.1]/", "private")]:
                r = create_webhook(server, url, ["processing.completed"])
                self.assertEqual(r.status, 400, (url, r.body))
                err = r.json()["error"]
                self.assertEqual(err["code"], "PRIVATE_ADDRESS_NOT_ALLOWED", (url, r.body))
                self.assertIn(why, err["message"])
                self.assertIn("webhooks.allow_private_networks", err["message"])
            self.assertEqual(server.request("GET", "/api/v1/webhooks").json()["webhooks"], [])
        finally:
            server.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
