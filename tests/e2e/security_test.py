"""End-to-end tests of what keeps `deeplens serve` safe to expose (issue #12 acceptance): the API key
is checked from the headers before any of the body is read, connection limits, per-tenant rate
limits and storage quotas, key revocation and expiry seen by a running server, injective collection
names, redacted configuration, security headers and bounded metrics labels."""
import json
import os
import re
import resource
import select
import selectors
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402


def cli(server, *args):
    """An operator command in a second process on the running server's data directory."""
    r = subprocess.run([e2e.DEELENS_BIN, *args, "--data-dir", server.data_dir], capture_output=True, text=True,
                       env=server.env, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"deeplens {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def new_tenant(server, slug, *limit_flags):
    out = cli(server, "tenants", "create", slug, *limit_flags)
    return re.search(r"api key: (dlk_[0-9a-f]+)", out).group(1)


def host_port(url):
    host, port = url.split("//")[1].split(":")
    return host, int(port)


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = e2e.Server(extra_args=["--set", "server.max_connections_per_client=100"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def spool_files(self):
        return os.listdir(os.path.join(self.server.data_dir, "spool"))

    def assert_error(self, reply, status, code):
        self.assertEqual(reply.status, status, reply.body)
        body = reply.json()
        self.assertEqual(body["error"]["code"], code, body)
        self.assertTrue(body["error"]["message"])
        return body["error"]

    def send_large_body(self, key_header):
        """Streams a 60 MB multipart upload; returns (bytes sent before the answer came, the answer)."""
        total = 60 * 1000 * 1000
        s = socket.create_connection(host_port(self.server.url), timeout=30)
        try:
            head = (f"POST /api/v1/images/upload HTTP/1.1\r\nHost: x\r\n{key_header}"
                    f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {total}\r\n\r\n").encode()
            s.sendall(head)
            chunk = b"\0" * 65536
            sent = 0
            seen_spool = set()
            while sent < total:
                readable, _, _ = select.select([s], [], [], 0)
                if readable:
                    break
                try:
                    sent += s.send(chunk[: min(len(chunk), total - sent)])
                except (BrokenPipeError, ConnectionResetError):
                    break
                seen_spool.update(self.spool_files())
            s.settimeout(10)
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer) < answer.find(b"\r\n\r\n") + 4 + 40:
                part = s.recv(65536)
                if not part:
                    break
                answer += part
            return sent, answer, seen_spool
        finally:
            s.close()

    def test_an_upload_without_a_valid_key_is_refused_while_the_client_is_still_sending(self):
        for key_header in ("", "Authorization: Bearer dlk_" + "0" * 64 + "\r\n"):
            sent, answer, seen_spool = self.send_large_body(key_header)
            self.assertTrue(answer.startswith(b"HTTP/1.1 401"), answer[:200])
            self.assertLess(sent, 60 * 1000 * 1000 // 2, "the refusal came only after most of the body was sent")
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            self.assertEqual(body["error"]["code"], "UNAUTHENTICATED")
            self.assertEqual(seen_spool, set(), "a spool file appeared for an unauthenticated body")
            self.assertEqual(self.spool_files(), [])

    def test_connections_past_the_per_client_limit_are_refused_while_another_client_is_served(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
        addr = host_port(self.server.url)
        socks = []
        try:
            for _ in range(2000):
                s = socket.create_connection(addr, timeout=10)
                s.setblocking(False)
                socks.append(s)
            # The server closes every connection past the limit at accept: those read end-of-stream.
            closed = set()
            watch = selectors.DefaultSelector()  # epoll: select() cannot watch fds past 1024
            for s in socks:
                watch.register(s, selectors.EVENT_READ)
            deadline = time.time() + 30
            while len(closed) < 1900 and time.time() < deadline:
                for event, _ in watch.select(0.5):
                    s = event.fileobj
                    try:
                        if s.recv(1) == b"":
                            closed.add(s)
                    except (ConnectionResetError, BlockingIOError):
                        closed.add(s)
                    if s in closed:
                        watch.unregister(s)
            watch.close()
            self.assertEqual(len(socks) - len(closed), 100, "open connections from one address != the limit")
            # Another address on loopback is a different client: served normally meanwhile.
            other = socket.socket()
            other.bind(("127.0.0.2", 0))
            other.settimeout(10)
            other.connect(addr)
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while True:
                part = other.recv(4096)
                if not part:
                    break
                reply += part
            other.close()
            self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply[:200])
        finally:
            for s in socks:
                s.close()
        # The slots come back once the connections close.
        deadline = time.time() + 10
        while time.time() < deadline and self.server.request("GET", "/healthz").status != 200:
            time.sleep(0.1)
        self.assertEqual(self.server.request("GET", "/healthz").status, 200)

    def test_a_tenant_over_its_upload_rate_gets_429_and_another_tenant_is_unaffected(self):
        limited = new_tenant(self.server, "rate-limited", "--upload-rate", "2")
        free = new_tenant(self.server, "rate-free")
        limited_codes, free_codes = [], []
        for i in range(10):
            r = self.server.upload(e2e.png_bytes(32, 32, seed=1000 + i), f"r{i}.png", key=limited)
            limited_codes.append(r.status)
            if r.status == 429:
                self.assertGreaterEqual(int(r.headers["Retry-After"]), 1)
                error = self.assert_error(r, 429, "RATE_LIMITED")
                self.assertEqual(error["details"]["limit"], "upload_rate")
            free_codes.append(self.server.upload(e2e.png_bytes(32, 32, seed=2000 + i), f"f{i}.png", key=free).status)
        self.assertIn(429, limited_codes)
        self.assertIn(202, limited_codes)
        self.assertEqual(free_codes, [202] * 10)
        # Searches have their own bucket.
        searcher = new_tenant(self.server, "search-limited", "--search-rate", "1")
        query = json.dumps({"imageId": "img_00000000-0000-4000-8000-000000000000"}).encode()
        codes = [self.server.request("POST", "/api/v1/search", query, "application/json", key=searcher).status
                 for _ in range(3)]
        self.assertEqual(codes[0], 404)  # allowed through, and the image is unknown
        self.assertIn(429, codes[1:])

    def test_a_tenant_at_its_image_limit_gets_a_4xx_and_nothing_is_stored(self):
        key = new_tenant(self.server, "quota-three", "--max-images", "3")
        for i in range(3):
            r = self.server.upload(e2e.png_bytes(40, 40, seed=3000 + i), f"q{i}.png", key=key)
            self.assertEqual(r.status, 202, r.body)
        blobs_before = [f for f in self.server.image_files() if "tenant-quota-three" in f]
        for attempt in range(2):  # from the headers (usage cached) and after the cache expired
            r = self.server.upload(e2e.png_bytes(40, 40, seed=3100 + attempt), "q4.png", key=key)
            error = self.assert_error(r, 403, "QUOTA_EXCEEDED")
            self.assertEqual(error["details"]["limit"], "3")
            time.sleep(0.6)
        listed = self.server.request("GET", "/api/v1/images?limit=50", key=key).json()["images"]
        self.assertEqual(len(listed), 3)
        self.assertEqual([f for f in self.server.image_files() if "tenant-quota-three" in f], blobs_before)
        self.assertEqual(len(blobs_before), 3)
        row = [line for line in cli(self.server, "tenants", "list").splitlines() if line.startswith("quota-three\t")]
        self.assertEqual(row[0].split("\t")[2:4], ["3", "3"])
        # Deleting an image frees its place.
        self.assertEqual(self.server.request("DELETE", "/api/v1/images/" + listed[0]["imageId"], key=key).status, 204)
        time.sleep(0.6)
        self.assertEqual(self.server.upload(e2e.png_bytes(40, 40, seed=3200), "q5.png", key=key).status, 202)

    def test_a_revoked_key_is_refused_by_the_running_server_within_a_second(self):
        new_tenant(self.server, "revoker")
        out = cli(self.server, "tenants", "keys", "create", "revoker", "--name", "ci")
        key = re.search(r"api key: (dlk_[0-9a-f]+)", out).group(1)
        key_id = re.search(r"key id: (key_[0-9a-f]+)", out).group(1)
        self.assertEqual(self.server.request("GET", "/api/v1/images", key=key).status, 200)
        listing = cli(self.server, "tenants", "keys", "list", "revoker")
        self.assertRegex(listing, key_id + r"\tci\tdlk_[0-9a-f]{8}\.\.\.\t\S+\t\S+\tnever\tactive")
        self.assertNotIn(key, listing)
        cli(self.server, "tenants", "keys", "revoke", "revoker", key_id)
        revoked_at = time.time()
        first_refusal = None
        while time.time() - revoked_at < 1.0:
            if self.server.request("GET", "/api/v1/images", key=key).status == 401:
                first_refusal = first_refusal or time.time() - revoked_at
            time.sleep(0.02)
        # Every request that starts a second after the revocation is refused.
        r = self.server.request("GET", "/api/v1/images", key=key)
        self.assertIn("revoked", self.assert_error(r, 401, "UNAUTHENTICATED")["message"])
        self.assertIsNotNone(first_refusal)
        print(f"revoked key first refused after {first_refusal:.3f} s", file=sys.stderr)
        self.assertIn("revoked", cli(self.server, "tenants", "keys", "list", "revoker"))

    def test_an_expired_key_is_refused(self):
        new_tenant(self.server, "expirer")
        out = cli(self.server, "tenants", "keys", "create", "expirer", "--expires-in", "2s")
        key = re.search(r"api key: (dlk_[0-9a-f]+)", out).group(1)
        self.assertEqual(self.server.request("GET", "/api/v1/images", key=key).status, 200)
        time.sleep(2.2)
        r = self.server.request("GET", "/api/v1/images", key=key)
        self.assertIn("expired", self.assert_error(r, 401, "UNAUTHENTICATED")["message"])

    def test_tenants_that_differ_only_in_punctuation_have_different_collections(self):
        photo = e2e.real_photo("astronaut.png")
        found = {}
        for slug in ("acme-corp", "acmecorp"):
            key = new_tenant(self.server, slug)
            r = self.server.upload(photo, "astronaut.png", key=key)
            self.assertEqual(r.status, 202, r.body)
            image_id = r.json()["imageId"]
            deadline = time.time() + 60
            while time.time() < deadline:
                status = self.server.request("GET", f"/api/v1/images/{image_id}/status", key=key).json()
                if status["status"] in ("completed", "failed"):
                    break
                time.sleep(0.05)
            self.assertEqual(status["status"], "completed", status)
            collections = {s.get("collectionName") for s in status["processingSteps"] if s.get("collectionName")}
            hits = self.server.request("POST", "/api/v1/search", json.dumps({"imageId": image_id}).encode(),
                                       "application/json", key=key).json()
            found[slug] = (collections, hits["collection"], [h["imageId"] for h in hits["results"]], image_id)
        self.assertEqual(found["acme-corp"][1], "tenant_acme-corp_builtin_vectors")
        self.assertEqual(found["acmecorp"][1], "tenant_acmecorp_builtin_vectors")
        self.assertEqual(found["acme-corp"][0], {"tenant_acme-corp_builtin_vectors"})
        # A search by imageId leaves the query image out: the identical image of the other tenant
        # must not be found either.
        self.assertEqual(found["acme-corp"][2], [])
        self.assertEqual(found["acmecorp"][2], [])

    def test_config_shows_no_secret(self):
        r = subprocess.run([e2e.DEELENS_BIN, "config", "--set", "auth.default_key=dlk_topsecretvalue",
                            "--set", "metadata.url=postgresql://app:hunter2@db.example:5432/deeplens",
                            "--set", "kafka.sasl.password=kafkapw42"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        for secret in ("topsecretvalue", "hunter2", "kafkapw42"):
            self.assertNotIn(secret, r.stdout + r.stderr)
        self.assertIn("metadata.url = postgresql://app:<redacted>@db.example:5432/deeplens", r.stdout)
        self.assertIn("auth.default_key = <redacted>", r.stdout)
        self.assertIn("kafka.sasl.password = <redacted>", r.stdout)

    def test_every_response_has_nosniff_and_content_is_served_as_sniffed_with_a_disposition(self):
        self.assertEqual(self.server.request("GET", "/healthz").headers.get("X-Content-Type-Options"), "nosniff")
        self.assertEqual(self.server.request("GET", "/nope").headers.get("X-Content-Type-Options"), "nosniff")
        self.assertEqual(self.server.request("GET", "/api/v1/images", key=None).headers.get("X-Content-Type-Options"),
                         "nosniff")
        r = self.server.upload(e2e.png_bytes(24, 24, seed=4000), "x.png", {"fileName": 'evil".html'})
        self.assertEqual(r.status, 202, r.body)
        content = self.server.request("GET", f"/api/v1/images/{r.json()['imageId']}/content")
        self.assertEqual(content.status, 200)
        self.assertEqual(content.headers["Content-Type"], "image/png")  # sniffed, not the name's .html
        self.assertEqual(content.headers["X-Content-Type-Options"], "nosniff")
        self.assertTrue(content.headers["Content-Disposition"].startswith("inline; filename="))
        self.assertNotIn('evil".html', content.headers["Content-Disposition"])

    def test_metrics_labels_come_from_a_fixed_set(self):
        s = socket.create_connection(host_port(self.server.url), timeout=10)
        s.sendall(b"BREW /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(4096):
            pass
        s.close()
        metrics = self.server.request("GET", "/metrics").body.decode()
        self.assertNotIn('method="BREW"', metrics)
        self.assertIn('method="OTHER"', metrics)


if __name__ == "__main__":
    unittest.main(verbosity=2)
