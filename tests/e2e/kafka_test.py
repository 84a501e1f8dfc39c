"""End-to-end on the Kafka-protocol dev broker: one `deeplens api` and two `deeplens worker`
processes sharing a data directory (issue #6). Each process is a child process."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402

KAFKA_TUNING = ["--set", "kafka.consumer.fetch.wait.max.ms=5", "--set", "kafka.consumer.session.timeout.ms=6000",
                "--set", "kafka.consumer.heartbeat.interval.ms=1000", "--set", "bus.replication=1"]


class KafkaMultiProcessTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="deeplens-kafka-e2e-")
        self.procs = []
        self.broker = subprocess.Popen([e2e.DEELENS_BIN, "dev-kafka"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.broker.stdout.readline().decode()
        m = re.search(r"bootstrap.servers=(\S+)", line)
        self.assertIsNotNone(m, line)
        self.bus = "kafka://" + m.group(1)
        self.key = "dlk_kafka_e2e"

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.broker.terminate()
        self.broker.wait()
        self.broker.stdout.close()
        subprocess.run(["rm", "-rf", self.dir])

    def worker(self, name):
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        p = subprocess.Popen([e2e.DEELENS_BIN, "worker", "--data-dir", os.path.join(self.dir, "data"), "--bus", self.bus,
                              *KAFKA_TUNING], stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.procs.append(p)
        return p

    def extracted_by(self, name):
        with open(os.path.join(self.dir, name + ".log")) as f:
            return sum(1 for line in f if '"msg":"features.extracted"' in line)

    def test_api_and_two_workers_share_the_work_and_survive_a_killed_worker(self):
        api = e2e.Server(data_dir=os.path.join(self.dir, "data"),
                         extra_args=["--bus", self.bus, *KAFKA_TUNING],
                         env={"DEEPLENS_AUTH_DEFAULT_KEY": self.key})
        os.makedirs(api.data_dir, exist_ok=True)
        api.start(command="api")  # `deeplens api`: same banner as serve
        w1, w2 = self.worker("w1"), self.worker("w2")
        ids = []

        def upload(n, seed):
            for i in range(n):
                r = api.upload(e2e.png_bytes(48, 48, seed=seed + i), "k.png")
                self.assertEqual(r.status, 202, r.body)
                ids.append(r.json()["imageId"])

        # Until both workers are in the group, one of them may hold every partition: keep feeding
        # small rounds until each has done some of the work (bounded).
        deadline = time.time() + 90
        seed = 20000
        while (self.extracted_by("w1") == 0 or self.extracted_by("w2") == 0) and time.time() < deadline:
            upload(10, seed)
            seed += 10
            for image_id in ids:
                api.wait_status(image_id, timeout=120)
        self.assertGreater(self.extracted_by("w1"), 0)
        self.assertGreater(self.extracted_by("w2"), 0, "both workers did part of the work")
        w2.send_signal(signal.SIGKILL)  # its partitions must move to w1
        upload(100 - len(ids), seed)
        for image_id in ids:
            self.assertEqual(api.wait_status(image_id, timeout=180)["status"], "completed", image_id)
        metrics = api.request("GET", "/metrics", key=None).body.decode()
        vectors = re.search(r'deeplens_index_vectors\{collection="tenant_default_builtin_vectors"\} (\d+)', metrics)
        self.assertIsNotNone(vectors, metrics[-2000:])
        self.assertEqual(int(vectors.group(1)), 100, "exactly one vector per image")
        # An independent client reads the topic: keys are imageIds, headers are there.
        out = subprocess.run(["kcat", "-b", self.bus[len("kafka://"):], "-C", "-t", "deeplens.processing.completed",
                              "-o", "beginning", "-e", "-q", "-f", "%k|%h\\n"], capture_output=True, text=True, timeout=60)
        lines = [l for l in out.stdout.splitlines() if l]
        self.assertEqual(len({l.split("|")[0] for l in lines}), 100, out.stderr)
        self.assertEqual(len(lines), 100, "exactly one completion event per image")
        for l in lines:
            key, headers = l.split("|", 1)
            self.assertTrue(key.startswith("img_"))
            for h in ("eventType=processing.completed", "eventVersion=1.0", "correlationId=evt_", "tenantId=default"):
                self.assertIn(h, headers)
        self.assertEqual(api.stop(), 0)
        w1.terminate()
        self.assertEqual(w1.wait(timeout=60), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
