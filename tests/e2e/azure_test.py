"""A deployment across hosts that share no files (issue #16): one `deeplens api` and two extract
workers, each with its own data directory, metadata on a real PostgreSQL server, events on the
Kafka-protocol dev broker, image blobs in Azure Blob Storage (a real Azurite)."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402
from kafka_test import KAFKA_TUNING  # noqa: E402

TOTAL = 200


class AzureMultiHostTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = e2e.PostgresServer()
        cls.azurite = e2e.AzuriteServer()

    @classmethod
    def tearDownClass(cls):
        cls.azurite.cleanup()
        cls.pg.cleanup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="deeplens-azure-e2e-")
        self.broker = subprocess.Popen([e2e.DEELENS_BIN, "dev-kafka"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        m = re.search(r"bootstrap.servers=(\S+)", self.broker.stdout.readline().decode())
        self.assertIsNotNone(m)
        self.bus = "kafka://" + m.group(1)
        self.key = "dlk_azure_e2e"
        self.servers, self.procs = [], []
        self.env = {"DEEPLENS_AUTH_DEFAULT_KEY": self.key,
                    "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string()}
        # A fresh database per test: each test starts from an empty pipeline.
        self.db = "t" + str(int(time.time() * 1000))
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
        if self.azurite.proc is None:
            self.azurite.start()
        subprocess.run(["rm", "-rf", "/tmp/deeplens-azure-e2e-last"])
        subprocess.run(["cp", "-r", self.dir, "/tmp/deeplens-azure-e2e-last"])
        subprocess.run(["rm", "-rf", self.dir])

    def common_args(self):
        return ["--bus", self.bus, "--metadata", self.metadata, "--set", "blobs.url=azure", "--set",
                "blobs.azure.max_attempts=2", "--set", "pipeline.backoff_ms=2000", "--set", "pipeline.max_attempts=5",
                *KAFKA_TUNING]

    def api(self):
        server = e2e.Server(data_dir=os.path.join(self.dir, "api-host"), extra_args=self.common_args(), env=self.env)
        os.makedirs(server.data_dir, exist_ok=True)
        self.servers.append(server)
        return server.start(command="api")

    def worker(self, name):
        data = os.path.join(self.dir, name + "-host")  # a host of its own: nothing shared on disk
        os.makedirs(data, exist_ok=True)
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        p = subprocess.Popen([e2e.DEELENS_BIN, "worker", "--data-dir", data, *self.common_args()],
                             stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, **self.env))
        log.close()
        self.procs.append(p)
        return p

    def extracted_by(self, name):
        with open(os.path.join(self.dir, name + ".log")) as f:
            return sum(1 for line in f if '"msg":"features.extracted"' in line)

    def local_image_files(self):
        found = []
        for host in os.listdir(self.dir):
            for dirpath, _, files in os.walk(os.path.join(self.dir, host, "blobs")):
                found += [os.path.join(dirpath, f) for f in files]
        return found

    def all_images(self, api):
        ids, cursor = [], None
        while True:
            r = api.request("GET", "/api/v1/images?limit=500" + (f"&cursor={cursor}" if cursor else ""))
            self.assertEqual(r.status, 200, r.body)
            page = r.json()
            ids += [i["imageId"] for i in page["images"]]
            cursor = page["nextCursor"]
            if not cursor:
                return ids

    def test_api_and_two_workers_on_separate_hosts_complete_everything_and_survive_a_blob_outage(self):
        api = self.api()
        self.worker("w1")
        self.worker("w2")
        sent = {}

        def upload(n, seed):
            for i in range(n):
                data = e2e.png_bytes(48 + (seed + i) % 16, 40, seed=seed + i)
                r = api.upload(data, "az.png")
                self.assertEqual(r.status, 202, r.body)
                sent[r.json()["imageId"]] = data

        # Until both workers are in the consumer group one may hold every partition: feed small
        # rounds until each has extracted something (bounded), then the rest.
        deadline = time.time() + 90
        seed = 1000
        while (self.extracted_by("w1") == 0 or self.extracted_by("w2") == 0) and time.time() < deadline:
            upload(10, seed)
            seed += 10
            for image_id in list(sent):
                api.wait_status(image_id, timeout=120)
        self.assertGreater(self.extracted_by("w1"), 0)
        self.assertGreater(self.extracted_by("w2"), 0, "both workers did part of the work")
        upload(TOTAL - len(sent), seed)
        seed += TOTAL
        for image_id in sent:
            self.assertEqual(api.wait_status(image_id, timeout=180)["status"], "completed", image_id)
        self.assertGreaterEqual(self.extracted_by("w1") + self.extracted_by("w2"), TOTAL)
        self.assertEqual(self.local_image_files(), [], "no blob on any host's disk")

        # Content and thumbnails come back through the api, which never had them on its disk.
        for image_id in list(sent)[::10]:
            content = api.request("GET", f"/api/v1/images/{image_id}/content")
            self.assertEqual(content.status, 200, content.body[:300])
            self.assertEqual(content.body, sent[image_id])
            deadline = time.time() + 60  # thumbnails are made beside the pipeline, not before completion
            while True:
                thumb = api.request("GET", f"/api/v1/images/{image_id}/thumbnail")
                if thumb.status != 404 or time.time() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual(thumb.status, 200, thumb.body[:300])
            self.assertEqual(thumb.body[:3], b"\xff\xd8\xff", "a JPEG thumbnail")

        # The events name the blob as the spec does: storageProvider azure_blob, the container per
        # tenant, blobName YYYY/MM/DD/<imageId>.<ext>, filePath the blob's URL.
        out = subprocess.run(["kcat", "-b", self.bus[len("kafka://"):], "-C", "-t", "deeplens.images.uploaded", "-o",
                              "beginning", "-e", "-q"], capture_output=True, text=True, timeout=120)
        events = [json.loads(line) for line in out.stdout.splitlines() if line]
        self.assertGreaterEqual(len(events), TOTAL, out.stderr)
        for event in events:
            d = event["data"]
            sp = d["storageProvider"]
            self.assertEqual(sp["type"], "azure_blob")
            self.assertEqual(sp["containerName"], "default-images")
            self.assertRegex(sp["blobName"], r"^\d{4}/\d{2}/\d{2}/" + d["imageId"] + r"\.png$")
            self.assertEqual(d["filePath"], f"{self.azurite.endpoint}/default-images/{sp['blobName']}")
        # What an independent client lists in the container: one original per image (the names the
        # events gave) and one thumbnail beside each.
        originals = sorted({e["data"]["storageProvider"]["blobName"] for e in events})
        thumbnails = sorted("thumbnails/" + b[:-len("png")] + "jpg" for b in originals)
        deadline = time.time() + 60  # the last thumbnails may still be in the making
        while True:
            blobs = self.azurite.list_blobs("default-images")
            if sorted(b for b in blobs if b.startswith("thumbnails/")) == thumbnails or time.time() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(sorted(b for b in blobs if not b.startswith("thumbnails/")), originals)
        self.assertEqual(sorted(b for b in blobs if b.startswith("thumbnails/")), thumbnails)

        # The blob service goes away for 20 s: work in flight waits and retries, every upload is
        # refused with 503 naming the blob storage (nothing accepted, so nothing can be lost).
        in_flight = []
        for i in range(10):
            data = e2e.png_bytes(52, 44, seed=seed + i)
            r = api.upload(data, "flight.png")
            self.assertEqual(r.status, 202, r.body)
            sent[r.json()["imageId"]] = data
            in_flight.append(r.json()["imageId"])
        seed += 10
        self.azurite.stop()
        stopped = time.time()
        refused = 0
        while time.time() - stopped < 20:
            r = api.upload(e2e.png_bytes(50, 50, seed=seed), "down.png")
            seed += 1
            self.assertEqual(r.status, 503, r.body)
            error = r.json()["error"]
            self.assertEqual(error["code"], "UNAVAILABLE")
            self.assertIn("blob storage", error["message"])
            self.assertEqual(error["details"]["service"], "blobs")
            self.assertNotIn(self.azurite.KEY, r.body.decode())
            refused += 1
            time.sleep(0.5)
        ready = api.request("GET", "/readyz", key=None)
        self.assertEqual(ready.status, 503, ready.body)
        self.assertNotEqual(ready.json()["checks"]["blobs"], "ok")
        self.azurite.start()
        self.assertGreater(refused, 5)
        after = None
        deadline = time.time() + 30
        while time.time() < deadline:
            data = e2e.png_bytes(54, 46, seed=seed)
            after = api.upload(data, "after.png")
            if after.status == 202:
                sent[after.json()["imageId"]] = data
                break
            time.sleep(0.5)
        self.assertEqual(after.status, 202, after.body)
        for image_id in sent:
            self.assertEqual(api.wait_status(image_id, timeout=180)["status"], "completed", image_id)
        self.assertEqual(sorted(self.all_images(api)), sorted(sent), "exactly the accepted uploads, none lost")
        self.assertEqual(api.request("GET", "/readyz", key=None).status, 200)
        self.assertEqual(api.stop(), 0)

    def test_an_oversize_upload_is_refused_and_leaves_no_blob(self):
        self.servers.clear()
        server = e2e.Server(data_dir=os.path.join(self.dir, "api-host"),
                            extra_args=self.common_args() + ["--set", "upload.max_bytes=20000"], env=self.env)
        os.makedirs(server.data_dir, exist_ok=True)
        self.servers.append(server)
        api = server.start(command="api")
        before = self.azurite.list_blobs("default-images")
        big = e2e.real_photo("astronaut.png")
        self.assertGreater(len(big), 20000)
        r = api.upload(big, "big.png")
        self.assertEqual(r.status, 413, r.body)
        self.assertEqual(r.json()["error"]["code"], "FILE_TOO_LARGE")
        self.assertEqual(self.azurite.list_blobs("default-images"), before)
        self.assertEqual(os.listdir(os.path.join(api.data_dir, "spool")), [])
        self.assertEqual(self.all_images(api), [])
        self.assertEqual(api.stop(), 0)

    def test_a_blob_deleted_behind_our_back_fails_the_image_with_blob_missing(self):
        api = self.api()  # no worker yet: the upload waits for extraction
        r = api.upload(e2e.png_bytes(40, 40, seed=9), "gone.png")
        self.assertEqual(r.status, 202, r.body)
        image_id = r.json()["imageId"]
        names = [b for b in self.azurite.list_blobs("default-images") if image_id in b]
        self.assertEqual(len(names), 1, names)
        status, body = self.azurite.signed("DELETE", f"/default-images/{names[0]}")
        self.assertEqual(status, 202, body)
        self.worker("w1")
        final = api.wait_status(image_id, timeout=120)
        self.assertEqual(final["status"], "failed", final)
        self.assertEqual(final["error"]["code"], "BLOB_MISSING", final)
        self.assertIn("blob not found", final["error"]["message"])
        self.assertEqual(api.stop(), 0)

    def test_a_wrong_account_key_refuses_uploads_naming_the_credentials_and_readyz_says_so(self):
        self.env["AZURE_STORAGE_CONNECTION_STRING"] = self.azurite.connection_string(key="d3Jvbmcta2V5LXdyb25nLWtleQ==")
        api = self.api()
        r = api.upload(e2e.png_bytes(40, 40, seed=1), "k.png")
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(r.json()["error"]["details"]["service"], "blobs")
        ready = api.request("GET", "/readyz", key=None)
        self.assertEqual(ready.status, 503)
        self.assertIn("credentials of account 'devstoreaccount1'", ready.json()["checks"]["blobs"])
        with open(os.path.join(api.data_dir, "api.log")) as f:
            log = f.read()
        self.assertIn("credentials of account", log)  # the operator learns why
        self.assertNotIn("d3Jvbmcta2V5LXdyb25nLWtleQ==", log)
        self.assertEqual(self.all_images(api), [])
        self.assertEqual(api.stop(), 0)


if __name__ == "__main__":
    unittest.main()
