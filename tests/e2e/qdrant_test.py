"""The Qdrant vector backend in a scaled-out deployment (issue #20): two `deeplens api` processes and
a worker that runs the index stage, on separate data directories (nothing shared on disk), metadata
on a real PostgreSQL, events on the Kafka-protocol dev broker, blobs in Azurite, vectors in Qdrant.

Qdrant here is the contract-checking stand-in (tests/support/qdrant_standin.py): no Qdrant server
can be installed on these machines. Every request the three processes send is validated against
Qdrant's OpenAPI document and must carry the tenant filter; the test fails on any violation."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402
from kafka_test import KAFKA_TUNING  # noqa: E402

PER_API = 15


class QdrantScaleOutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = e2e.PostgresServer()
        cls.azurite = e2e.AzuriteServer()

    @classmethod
    def tearDownClass(cls):
        cls.azurite.cleanup()
        cls.pg.cleanup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="deeplens-qdrant-e2e-")
        self.broker = subprocess.Popen([e2e.DEELENS_BIN, "dev-kafka"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        m = re.search(r"bootstrap.servers=(\S+)", self.broker.stdout.readline().decode())
        self.assertIsNotNone(m)
        self.bus = "kafka://" + m.group(1)
        self.qdrant = e2e.QdrantStandin()
        self.servers, self.procs = [], []
        self.env = {"DEEPLENS_AUTH_DEFAULT_KEY": "dlk_qdrant_e2e",
                    "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string()}
        self.db = "q" + str(int(time.time() * 1000))
        subprocess.run(self.pg.as_user + ["psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres", "-c",
                                          f"CREATE DATABASE {self.db}"], check=True, capture_output=True)
        self.metadata = f"postgresql://postgres@127.0.0.1:{self.pg.port}/{self.db}"

    def tearDown(self):
        for server in self.servers:
            if server.proc is not None:
                server.proc.kill()
                server.stop()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.broker.terminate()
        self.broker.wait()
        self.broker.stdout.close()
        self.broker.stdin.close()
        subprocess.run(["cp", "-r", self.qdrant.dir, os.path.join(self.dir, "qdrant")])
        self.qdrant.cleanup()
        subprocess.run(["rm", "-rf", "/tmp/deeplens-qdrant-e2e-last"])
        subprocess.run(["cp", "-r", self.dir, "/tmp/deeplens-qdrant-e2e-last"])
        subprocess.run(["rm", "-rf", self.dir])

    def common_args(self):
        return ["--bus", self.bus, "--metadata", self.metadata, "--set", "blobs.url=azure",
                "--set", f"vectors.url=qdrant+{self.qdrant.url}", "--set", "vectors.qdrant.timeout_ms=2000",
                "--set", "vectors.qdrant.max_attempts=2", "--set", "pipeline.backoff_ms=1000",
                "--set", "pipeline.max_attempts=12", *KAFKA_TUNING]

    def api(self, name):
        data = os.path.join(self.dir, name + "-host")
        os.makedirs(data, exist_ok=True)
        # No index stage: the api processes only serve search from Qdrant (and delete from it).
        server = e2e.Server(data_dir=data, extra_args=self.common_args() + ["--stages", "orchestrate,notify,retry"],
                            env=self.env)
        self.servers.append(server)
        return server.start(command="api")

    def worker(self, name):
        data = os.path.join(self.dir, name + "-host")
        os.makedirs(data, exist_ok=True)
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        p = subprocess.Popen([e2e.DEELENS_BIN, "worker", "--data-dir", data, "--stages", "extract,thumbnail,index",
                              *self.common_args()], stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, **self.env))
        log.close()
        self.procs.append(p)
        return p

    def upload(self, api, seed):
        data = e2e.png_bytes(40 + seed % 24, 36 + seed % 20, seed=seed)
        r = api.upload(data, f"q{seed}.png")
        self.assertEqual(r.status, 202, r.body)
        return r.json()["imageId"], data

    def search_by_bytes(self, api, data):
        body, ctype = e2e.multipart({"topK": "5"}, {"file": ("query.png", data)})
        return api.request("POST", "/api/v1/search", body, ctype)

    def assert_no_violations(self):
        self.assertEqual(self.qdrant.violations(), [], "every request validates against Qdrant's OpenAPI document")

    def test_uploads_through_either_api_are_searchable_through_both(self):
        a, b = self.api("api1"), self.api("api2")
        self.worker("w1")
        sent = {}  # imageId -> (bytes, the api it came through)
        for i in range(PER_API):
            for name, api in (("api1", a), ("api2", b)):
                image_id, data = self.upload(api, 100 + 2 * i + (name == "api2"))
                sent[image_id] = (data, name)
        for image_id in sent:
            self.assertEqual(a.wait_status(image_id, timeout=180)["status"], "completed", image_id)

        # Both apis find every image, whichever api took it: by its bytes it is the first hit.
        for image_id, (data, origin) in list(sent.items())[::3]:
            for name, api in (("api1", a), ("api2", b)):
                r = self.search_by_bytes(api, data)
                self.assertEqual(r.status, 200, r.body)
                hits = r.json()["results"]
                self.assertTrue(hits, f"{name} finds {image_id} uploaded through {origin}")
                self.assertEqual(hits[0]["imageId"], image_id)
                self.assertGreater(hits[0]["score"], 0.99)
        # By imageId through the other api: neighbours from both apis' uploads.
        first_of_api1 = next(i for i, (_, o) in sent.items() if o == "api1")
        r = b.request("POST", "/api/v1/search", json.dumps({"imageId": first_of_api1, "topK": 2 * PER_API}).encode(),
                      "application/json")
        self.assertEqual(r.status, 200, r.body)
        origins = {sent[h["imageId"]][1] for h in r.json()["results"]}
        self.assertEqual(origins, {"api1", "api2"})

        # Qdrant holds one collection per tenant and model, named as the spec does, with every point.
        collections = [c["name"] for c in self.qdrant.get("/collections")["collections"]]
        self.assertEqual(len(collections), 1, collections)
        self.assertRegex(collections[0], r"^tenant_default_[a-z0-9_-]+_vectors$")
        self.assertEqual(self.qdrant.get("/collections/" + collections[0])["points_count"], len(sent))
        for api in (a, b):
            ready = api.request("GET", "/readyz")
            self.assertEqual(ready.status, 200, ready.body)
            self.assertEqual(ready.json()["checks"]["vectors"], "ok")

        # A delete through one api removes the point from Qdrant; the other api no longer finds it.
        gone = next(iter(sent))
        self.assertEqual(a.request("DELETE", f"/api/v1/images/{gone}").status, 204)
        r = self.search_by_bytes(b, sent[gone][0])
        self.assertEqual(r.status, 200, r.body)
        self.assertNotIn(gone, [h["imageId"] for h in r.json()["results"]])
        self.assertEqual(self.qdrant.get("/collections/" + collections[0])["points_count"], len(sent) - 1)
        self.assert_no_violations()

    def test_qdrant_down_uploads_are_accepted_search_is_503_and_indexing_catches_up(self):
        a, b = self.api("api1"), self.api("api2")
        self.worker("w1")
        before = [self.upload(a, 500 + i) for i in range(3)]
        for image_id, _ in before:
            self.assertEqual(a.wait_status(image_id, timeout=180)["status"], "completed")

        self.qdrant.stop()
        during = [self.upload(api, 600 + i) for i, api in enumerate([a, b] * 4)]  # still accepted
        r = self.search_by_bytes(b, before[0][1])
        self.assertEqual(r.status, 503, r.body)
        error = r.json()["error"]
        self.assertEqual(error["code"], "UNAVAILABLE")
        self.assertIn("vector store", error["message"])
        self.assertEqual(error["details"]["service"], "vectors")
        self.assertNotIn(str(self.qdrant.port), r.body.decode(), "the store's address stays in the log")
        ready = a.request("GET", "/readyz")
        self.assertEqual(ready.status, 503, ready.body)
        self.assertNotEqual(ready.json()["checks"]["vectors"], "ok")
        # The index stage fails and retries through the failure path: the step shows the error and
        # its attempts; no image is lost or failed.
        def indexing_errors():
            out = []
            for image_id, _ in during:
                st = a.status(image_id).json()
                self.assertNotEqual(st["status"], "failed", st)
                out += [s for s in st["processingSteps"] if s["step"] == "vector_indexing" and "lastError" in s]
            return out

        deadline = time.time() + 60
        while not indexing_errors() and time.time() < deadline:
            time.sleep(0.2)
        errors = indexing_errors()
        self.assertTrue(errors, "the index step records Qdrant's outage")
        self.assertIn("INDEX_UNAVAILABLE", errors[0]["lastError"])
        self.assertIn("Qdrant", errors[0]["lastError"])
        time.sleep(3)

        self.qdrant.start()
        for image_id, _ in during:
            self.assertEqual(b.wait_status(image_id, timeout=180)["status"], "completed", image_id)
        for image_id, data in before + during:
            r = self.search_by_bytes(a, data)
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json()["results"][0]["imageId"], image_id)
        self.assert_no_violations()

    def test_a_collection_with_another_dimension_fails_the_image_as_collection_mismatch(self):
        a = self.api("api1")
        self.worker("w1")
        # Learn the collection's name from a first image, then replace the collection by one of
        # another dimension, as another model (or version) writing to the same Qdrant would.
        first, _ = self.upload(a, 900)
        self.assertEqual(a.wait_status(first, timeout=180)["status"], "completed")
        name = self.qdrant.get("/collections")["collections"][0]["name"]
        req = urllib.request.Request(f"{self.qdrant.url}/collections/{name}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()
        req = urllib.request.Request(f"{self.qdrant.url}/collections/{name}", method="PUT",
                                     data=json.dumps({"vectors": {"size": 3, "distance": "Cosine"}}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).close()
        second, _ = self.upload(a, 901)
        st = a.wait_status(second, timeout=180)
        self.assertEqual(st["status"], "failed", st)
        self.assertEqual(st["error"]["code"], "COLLECTION_MISMATCH", st)
        self.assertIn("3-d", st["error"]["message"])
        self.assert_no_violations()


if __name__ == "__main__":
    unittest.main(verbosity=2)
