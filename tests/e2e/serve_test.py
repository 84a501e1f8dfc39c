"""End-to-end tests of `deeplens serve` over real HTTP (issue #5 acceptance)."""
import concurrent.futures
import json
import re
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402


class ServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = e2e.Server(extra_args=["--set", "server.max_body_bytes=3000000",
                                            "--set", "upload.max_bytes=2500000"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def assert_error(self, reply, status, code):
        self.assertEqual(reply.status, status, reply.body)
        body = reply.json()
        self.assertEqual(body["error"]["code"], code, body)
        self.assertTrue(body["error"]["message"])
        self.assertIn("details", body["error"])

    def image_count(self):
        r = self.server.request("GET", "/api/v1/images?limit=500")
        self.assertEqual(r.status, 200, r.body)
        return len(r.json()["images"])

    def test_upload_real_photo_then_status_then_search_finds_it_first(self):
        photo = e2e.real_photo("coffee.png")
        r = self.server.upload(photo, "coffee.png", {"uploadedBy": "user_e2e"})
        self.assertEqual(r.status, 202, r.body)
        body = r.json()
        for field in ("imageId", "status", "message", "estimatedProcessingTime", "statusCheckUrl"):
            self.assertIn(field, body)
        self.assertTrue(body["imageId"].startswith("img_"))
        self.assertEqual(body["status"], "uploaded")
        status = self.server.request("GET", body["statusCheckUrl"])
        self.assertEqual(status.status, 200, status.body)
        final = self.server.wait_status(body["imageId"])
        self.assertEqual(final["status"], "completed", final)
        for field in ("imageId", "status", "processingSteps", "estimatedTimeRemaining", "searchableAfter", "lastUpdated"):
            self.assertIn(field, final)
        self.assertIsNotNone(final["searchableAfter"])
        # Upload some other photos so the search has competition.
        for name in ("astronaut.png", "rocket.jpg", "chelsea.png"):
            other = self.server.upload(e2e.real_photo(name), name)
            self.assertIn(other.status, (200, 202), other.body)  # 200: another test uploaded it already
            self.server.wait_status(other.json()["imageId"])
        query, ctype = e2e.multipart({"topK": "3"}, {"file": ("q.png", photo)})
        found = self.server.request("POST", "/api/v1/search", query, ctype)
        self.assertEqual(found.status, 200, found.body)
        results = found.json()["results"]
        self.assertGreaterEqual(len(results), 2)
        self.assertEqual(results[0]["imageId"], body["imageId"])
        self.assertGreater(results[0]["score"], results[1]["score"])
        # By id: the image itself is left out.
        by_id = self.server.request("POST", "/api/v1/search", json.dumps({"imageId": body["imageId"]}).encode(),
                                    "application/json")
        self.assertEqual(by_id.status, 200, by_id.body)
        self.assertNotIn(body["imageId"], [h["imageId"] for h in by_id.json()["results"]])
        content = self.server.request("GET", f"/api/v1/images/{body['imageId']}/content")
        self.assertEqual(content.status, 200)
        self.assertEqual(content.body, photo)
        # The thumbnail stage runs beside the pipeline, so the thumbnail may land just after completion.
        deadline = time.monotonic() + 20
        thumb = self.server.request("GET", f"/api/v1/images/{body['imageId']}/thumbnail")
        while thumb.status == 404 and time.monotonic() < deadline:
            time.sleep(0.05)
            thumb = self.server.request("GET", f"/api/v1/images/{body['imageId']}/thumbnail")
        self.assertEqual(thumb.status, 200, thumb.body)
        self.assertEqual(thumb.body[:3], b"\xff\xd8\xff")

    def test_fifty_concurrent_uploads_are_all_accepted_and_completed(self):
        images = [e2e.png_bytes(64, 48, seed=1000 + i) for i in range(50)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            replies = list(pool.map(lambda data: self.server.upload(data, "synthetic.png"), images))
        self.assertEqual([r.status for r in replies], [202] * 50, [r.body for r in replies if r.status != 202])
        ids = [r.json()["imageId"] for r in replies]
        self.assertEqual(len(set(ids)), 50)
        for image_id in ids:
            self.assertEqual(self.server.wait_status(image_id, timeout=120)["status"], "completed")

    def test_bad_uploads_get_a_clear_4xx_and_store_nothing(self):
        before_rows, before_files = self.image_count(), len(self.server.image_files())
        no_file, ctype = e2e.multipart({"fileName": "x.jpg"}, {})
        self.assert_error(self.server.request("POST", "/api/v1/images/upload", no_file, ctype), 400, "MISSING_FILE")
        self.assert_error(self.server.upload(b"", "empty.jpg"), 400, "EMPTY_FILE")
        self.assert_error(self.server.upload(b"hello, I am text pretending to be a JPEG\n" * 20, "fake.jpg"), 415, "NOT_AN_IMAGE")
        self.assert_error(self.server.upload(os.urandom(3_200_000), "huge.jpg"), 413, "PAYLOAD_TOO_LARGE")
        self.assert_error(self.server.upload(e2e.png_bytes(8, 8, declared=(100000, 100000)), "bomb.png"), 413, "IMAGE_TOO_LARGE")
        photo = e2e.png_bytes(32, 32, seed=7)
        self.assert_error(self.server.upload(photo, "a.png", {"processingOptions": "{not json"}), 400,
                          "INVALID_PROCESSING_OPTIONS")
        self.assert_error(self.server.upload(photo, "a.png", {"processingOptions": '{"models": ["resnet9000"]}'}), 400,
                          "UNKNOWN_MODEL")
        self.assert_error(self.server.upload(photo, "a.png", key=None), 401, "UNAUTHENTICATED")
        self.assert_error(self.server.upload(photo, "a.png", key="dlk_not_a_real_key"), 401, "UNAUTHENTICATED")
        self.assertEqual(self.image_count(), before_rows)
        self.assertEqual(len(self.server.image_files()), before_files)

    def test_path_traversal_file_name_is_accepted_and_stored_safely(self):
        r = self.server.upload(e2e.png_bytes(40, 40, seed=11), "../../../../etc/passwd")
        self.assertEqual(r.status, 202, r.body)
        image = self.server.request("GET", f"/api/v1/images/{r.json()['imageId']}").json()
        self.assertNotIn("/", image["fileName"])
        for path in self.server.image_files():
            self.assertTrue(os.path.realpath(path).startswith(os.path.realpath(self.server.data_dir)))
        self.assertFalse(any("passwd" in p for p in self.server.image_files()))

    def test_another_tenants_image_is_not_found(self):
        r = self.server.upload(e2e.png_bytes(40, 40, seed=12), "mine.png")
        self.assertEqual(r.status, 202, r.body)
        image_id = r.json()["imageId"]
        created = self.server.run_cli("tenants", "create", "other-co")
        self.assertEqual(created.returncode, 0, created.stderr)
        other_key = created.stdout.split("api key:")[1].strip()
        for path in (f"/api/v1/images/{image_id}", f"/api/v1/images/{image_id}/status",
                     f"/api/v1/images/{image_id}/content"):
            self.assert_error(self.server.request("GET", path, key=other_key), 404, "IMAGE_NOT_FOUND")
        search = self.server.request("POST", "/api/v1/search", json.dumps({"imageId": image_id}).encode(),
                                     "application/json", key=other_key)
        self.assertEqual(search.status, 404, search.body)
        self.assertEqual(len(self.server.request("GET", "/api/v1/images", key=other_key).json()["images"]), 0)

    def test_idempotency_key_and_duplicates_return_the_same_image(self):
        data = e2e.png_bytes(48, 48, seed=13)
        first = self.server.upload(data, "a.png", headers={"Idempotency-Key": "retry-13"})
        again = self.server.upload(data, "a.png", headers={"Idempotency-Key": "retry-13"})
        self.assertEqual(first.status, 202)
        self.assertEqual(again.status, 202)
        self.assertEqual(first.json()["imageId"], again.json()["imageId"])
        dup = self.server.upload(data, "copy.png")
        self.assertEqual(dup.status, 200, dup.body)
        self.assertTrue(dup.json()["duplicate"])
        self.assertEqual(dup.json()["imageId"], first.json()["imageId"])
        copy = self.server.upload(data, "copy.png", {"processingOptions": '{"skipDuplicateCheck": true}'})
        self.assertEqual(copy.status, 202)
        self.assertNotEqual(copy.json()["imageId"], first.json()["imageId"])

    def test_delete_removes_everything_and_is_idempotent(self):
        r = self.server.upload(e2e.png_bytes(40, 40, seed=14), "gone.png")
        image_id = r.json()["imageId"]
        self.server.wait_status(image_id)
        files = len(self.server.image_files())
        self.assertEqual(self.server.request("DELETE", f"/api/v1/images/{image_id}").status, 204)
        self.assertEqual(self.server.request("DELETE", f"/api/v1/images/{image_id}").status, 204)
        self.assertEqual(self.server.status(image_id).status, 404)
        self.assertEqual(len(self.server.image_files()), files - 1)

    def test_search_pages_by_offset_and_filters_over_http(self):
        ids = {}
        # Photos no other test of this server uploads (one checks that its first upload is a 202).
        for name in ("retina.jpg", "hubble_deep_field.jpg", "grass.png", "motorcycle_right.png", "brick.png"):
            r = self.server.upload(e2e.real_photo(name), name)
            self.assertIn(r.status, (200, 202), r.body)
            ids[name] = r.json()["imageId"]
            self.server.wait_status(ids[name])

        def search(body):
            return self.server.request("POST", "/api/v1/search", json.dumps(body).encode(), "application/json")

        base = {"imageId": ids["retina.jpg"], "minScore": -1}
        everything = search(dict(base, topK=100)).json()
        ranked = [h["imageId"] for h in everything["results"]]
        self.assertGreaterEqual(len(ranked), 4)
        self.assertEqual((everything["offset"], everything["nextOffset"]), (0, None))
        first = search(dict(base, topK=2)).json()
        self.assertEqual(([h["imageId"] for h in first["results"]], first["nextOffset"]), (ranked[:2], 2))
        second = search(dict(base, topK=2, offset=first["nextOffset"])).json()
        self.assertEqual([h["imageId"] for h in second["results"]], ranked[2:4])

        skip = [ids["grass.png"], ids["brick.png"]]
        kept = search(dict(base, topK=100, filter={"excludeIds": skip, "status": ["completed"]})).json()
        self.assertEqual([h["imageId"] for h in kept["results"]], [i for i in ranked if i not in skip])
        tuned = search(dict(base, topK=100, ef=512, exact=True)).json()
        self.assertEqual([h["imageId"] for h in tuned["results"]], ranked)
        future = search(dict(base, filter={"uploadedAfter": "2999-01-01T00:00:00Z"})).json()
        self.assertEqual(future["results"], [])
        past = search(dict(base, topK=100, filter={"uploadedBefore": "2999-01-01T00:00:00Z"})).json()
        self.assertEqual([h["imageId"] for h in past["results"]], ranked)

        # The same filter as a multipart part, searching by file.
        query, ctype = e2e.multipart({"topK": "100", "minScore": "-1", "filter": json.dumps({"excludeIds": [ids["retina.jpg"]]})},
                                     {"file": ("q.png", e2e.real_photo("retina.jpg"))})
        by_file = self.server.request("POST", "/api/v1/search", query, ctype)
        self.assertEqual(by_file.status, 200, by_file.body)
        self.assertNotIn(ids["retina.jpg"], [h["imageId"] for h in by_file.json()["results"]])

        for body, field in ((dict(base, offset=-1), "offset"), (dict(base, offset=5000), "offset"),
                            (dict(base, filter={"colour": "red"}), "filter.colour"),
                            (dict(base, filter={"status": ["done"]}), "filter.status"),
                            (dict(base, filter={"uploadedAfter": "yesterday"}), "filter.uploadedAfter"),
                            (dict(base, filter={"uploadedAfter": "2026-01-02T00:00:00Z", "uploadedBefore": "2026-01-01T00:00:00Z"}),
                             "filter.uploadedBefore"),
                            (dict(base, filter=[1]), "filter"),
                            (dict(base, ef=0), "ef"), (dict(base, ef=2000), "ef"), (dict(base, exact="yes"), "exact")):
            r = search(body)
            self.assert_error(r, 400, "INVALID_REQUEST")
            self.assertEqual(r.json()["error"]["details"]["field"], field, body)

    def test_client_cli_uploads_waits_reports_status_and_searches(self):
        env = dict(os.environ, DEEPLENS_URL=self.server.url, DEEPLENS_API_KEY=self.server.key)
        photos = [os.path.join(e2e.SKIMAGE, n) for n in ("astronaut.png", "rocket.jpg")]
        up = subprocess.run([e2e.DEELENS_BIN, "upload", "--wait", *photos], capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(up.returncode, 0, up.stderr)
        ids = [line.split("\t")[0] for line in up.stdout.splitlines()]
        self.assertEqual(len(ids), 2, up.stdout)
        self.assertIn("2/2", up.stderr, "a progress bar for many files")
        # Off a terminal the bar is not redrawn: each file's line stands alone, the count comes once.
        self.assertNotIn("\r", up.stderr + up.stdout)
        self.assertTrue(all(re.match(r"^img_\S+\t", line) for line in up.stdout.splitlines()), up.stdout)
        st = subprocess.run([e2e.DEELENS_BIN, "status", ids[0]], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertRegex(st.stdout.splitlines()[0], rf"^{ids[0]}  completed  \(priority normal\)$")
        self.assertRegex(st.stdout, r"feature_extraction  builtin  completed  \d+ ms")
        st = subprocess.run([e2e.DEELENS_BIN, "status", "--json", ids[0]], capture_output=True, text=True, env=env,
                            timeout=60)
        self.assertEqual(json.loads(st.stdout)["status"], "completed")
        se = subprocess.run([e2e.DEELENS_BIN, "search", photos[1], "--top-k", "3"], capture_output=True, text=True,
                            env=env, timeout=60)
        self.assertEqual(se.returncode, 0, se.stderr)
        self.assertIn(ids[1], se.stdout.splitlines()[0])
        se = subprocess.run([e2e.DEELENS_BIN, "search", photos[1], "--top-k", "3", "--json"], capture_output=True,
                            text=True, env=env, timeout=60)
        self.assertEqual(json.loads(se.stdout)["results"][0]["imageId"], ids[1])
        tl = self.server.run_cli("tenants", "list", "--json")
        tenants = [json.loads(line) for line in tl.stdout.splitlines()]
        self.assertIn("default", [t["tenantId"] for t in tenants], tl.stdout + tl.stderr)
        self.assertGreaterEqual(next(t for t in tenants if t["tenantId"] == "default")["images"], 2)
        bad = subprocess.run([e2e.DEELENS_BIN, "status", ids[0]], capture_output=True, text=True,
                             env=dict(env, DEEPLENS_API_KEY="dlk_wrong"), timeout=60)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("UNAUTHENTICATED", bad.stderr)

    def test_bash_completion_knows_the_commands_and_their_options(self):
        script = subprocess.run([e2e.DEELENS_BIN, "completion", "bash"], capture_output=True, text=True, check=True).stdout

        def complete(*words):
            line = " ".join(words)
            probe = (script + f"\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _deeplens; "
                     'printf "%s\\n" "${COMPREPLY[@]}"\n')
            return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()

        self.assertEqual(complete("deeplens", "up"), ["upload"])
        self.assertIn("--wait", complete("deeplens", "upload", "--"))
        self.assertEqual(complete("deeplens", "tenants", "keys", "re"), ["revoke"])
        self.assertIn("--json", complete("deeplens", "dlq", "list", "--j"))
        self.assertEqual(complete("deeplens", "doc"), ["doctor"])

    def test_health_readiness_and_metrics(self):
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)
        ready = self.server.request("GET", "/readyz", key=None)
        self.assertEqual(ready.status, 200, ready.body)
        metrics = self.server.request("GET", "/metrics", key=None).body.decode()
        self.assertIn("deeplens_http_requests_total", metrics)
        self.assertIn("deeplens_http_request_seconds_bucket", metrics)
        for name in ("deeplens_uploads_total", "deeplens_stage_messages_total", "deeplens_queue_depth",
                     "deeplens_index_vectors", "deeplens_images"):
            self.assertIn(name, metrics)


class ShutdownTest(unittest.TestCase):
    def test_sigterm_during_a_burst_loses_no_accepted_upload(self):
        server = e2e.Server().start()
        try:
            images = [e2e.png_bytes(96, 64, seed=5000 + i) for i in range(60)]
            accepted, failed = [], []
            lock = threading.Lock()

            def send(data):
                try:
                    r = server.upload(data, "burst.png")
                except Exception as exc:  # connection refused/reset once the server is going
                    with lock:
                        failed.append(repr(exc))
                    return
                with lock:
                    (accepted if r.status == 202 else failed).append(r.json()["imageId"] if r.status == 202 else r.status)

            threads = [threading.Thread(target=send, args=(d,)) for d in images]
            for i, t in enumerate(threads):
                t.start()
                if i == 20:
                    # Mid-burst: once the server has accepted one (on a loaded machine none of the
                    # first 21 may have reached it yet, and the test would prove nothing).
                    deadline = time.time() + 30
                    while time.time() < deadline:
                        with lock:
                            if accepted:
                                break
                        time.sleep(0.005)
                    server.proc.send_signal(signal.SIGTERM)
            for t in threads:
                t.join(timeout=120)
            self.assertEqual(server.stop(), 0, "clean exit on SIGTERM")
            self.assertEqual(len(accepted) + len(failed), 60)
            self.assertGreater(len(accepted), 0, failed[:5])
            server.start()
            for image_id in accepted:
                self.assertEqual(server.wait_status(image_id, timeout=120)["status"], "completed", image_id)
        finally:
            server.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
