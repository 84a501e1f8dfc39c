"""End-to-end on the Kafka-protocol dev broker: one `deeplens api` and two `deeplens worker`
processes sharing a data directory (issue #6). Each process is a child process."""
import json
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

TOTAL = 500  # images through 1 api + 2 workers

KAFKA_TUNING = ["--set", "kafka.consumer.fetch.wait.max.ms=5", "--set", "kafka.consumer.session.timeout.ms=6000",
                "--set", "kafka.consumer.heartbeat.interval.ms=1000", "--set", "kafka.reconnect.backoff.max.ms=1000",
                "--set", "bus.replication=1"]


class KafkaMultiProcessTest(unittest.TestCase):
    """Metadata in the SQLite file the processes share."""

    def metadata_args(self):
        return []

    def metadata_set_args(self):  # the same, for operator commands (which take --set only)
        args = self.metadata_args()
        return ["--set", "metadata.url=" + args[1]] if args else []

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="deeplens-kafka-e2e-")
        self.procs = []
        self.broker = subprocess.Popen([e2e.DEELENS_BIN, "dev-kafka"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        line = self.broker.stdout.readline().decode()
        m = re.search(r"bootstrap.servers=(\S+)", line)
        self.assertIsNotNone(m, line)
        self.bus = "kafka://" + m.group(1)
        self.key = "dlk_kafka_e2e"
        self.servers = []

    def api(self, *extra):
        """A `deeplens api` process on the shared data dir, stopped by tearDown whatever happens."""
        server = e2e.Server(data_dir=os.path.join(self.dir, "data"),
                            extra_args=["--bus", self.bus, *KAFKA_TUNING, *self.metadata_args(), *extra],
                            env={"DEEPLENS_AUTH_DEFAULT_KEY": self.key})
        os.makedirs(server.data_dir, exist_ok=True)
        self.servers.append(server)
        return server.start(command="api")  # same banner as serve

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
        # Keep the process logs of the last run for diagnosis, then remove the rest.
        subprocess.run(["rm", "-rf", "/tmp/deeplens-kafka-e2e-last"])
        os.makedirs("/tmp/deeplens-kafka-e2e-last", exist_ok=True)
        subprocess.run(f"cp {self.dir}/*.log {self.dir}/data/*.log /tmp/deeplens-kafka-e2e-last/ 2>/dev/null", shell=True)
        subprocess.run(["rm", "-rf", self.dir])

    def worker(self, name):
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        p = subprocess.Popen([e2e.DEELENS_BIN, "worker", "--data-dir", os.path.join(self.dir, "data"), "--bus", self.bus,
                              *KAFKA_TUNING, *self.metadata_args()], stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.procs.append(p)
        return p

    def extracted_by(self, name):
        with open(os.path.join(self.dir, name + ".log")) as f:
            return sum(1 for line in f if '"msg":"features.extracted"' in line)

    def test_a_client_on_api_b_hears_of_an_upload_through_api_a(self):
        """Real-time on Kafka: every HTTP process reads every event (issue #14)."""
        import asyncio
        import websockets
        api_a = self.api()
        api_b = self.api("--stages", "notify")  # no vector index: api A owns it
        self.worker("w1")

        async def scenario():
            url = api_b.url.replace("http://", "ws://") + "/api/v1/ws"
            ws = await websockets.connect(url, extra_headers={"Authorization": f"Bearer {self.key}"})
            await ws.send(json.dumps({"type": "subscribe", "id": 1, "topic": "tenant"}))
            self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), 30))["type"], "subscribed")

            async def completions(ids, timeout):
                done, events = set(), {}
                deadline = time.time() + timeout
                while done != set(ids) and time.time() < deadline:
                    try:
                        m = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.time())))
                    except asyncio.TimeoutError:
                        break
                    if m.get("event") == "ProcessingCompleted":
                        image = m["data"]["data"]["imageId"]
                        events[image] = events.get(image, 0) + 1
                        done.add(image)
                return done, events

            # api B's broadcast consumer joins its own group and starts at the end once it has its
            # partitions: warm up until an upload through A is heard on B (bounded).
            heard = False
            deadline = time.time() + 60
            seed = 50000
            while not heard and time.time() < deadline:
                r = api_a.upload(e2e.png_bytes(40, 40, seed=seed), "warm.png")
                seed += 1
                self.assertEqual(r.status, 202, r.body)
                done, _ = await completions([r.json()["imageId"]], 15)
                heard = bool(done)
            self.assertTrue(heard, "api B never heard of an upload through api A")
            ids = []
            for i in range(10):
                r = api_a.upload(e2e.png_bytes(44, 40, seed=60000 + i), "a.png")
                self.assertEqual(r.status, 202, r.body)
                ids.append(r.json()["imageId"])
            done, events = await completions(ids, 120)
            await ws.close()
            return ids, done, events

        ids, done, events = asyncio.run(scenario())
        self.assertEqual(done, set(ids))
        self.assertEqual({i: events[i] for i in ids}, {i: 1 for i in ids}, "one ProcessingCompleted per image")

    def test_two_api_processes_send_each_webhook_delivery_once(self):
        """Webhooks at scale (issue #15): both api processes run a dispatcher over the shared
        queue; every completion is delivered, signed, and never by both."""
        import webhooks_test as wh
        hooks = ["--set", "webhooks.allow_private_networks=true", "--set", "webhooks.retry_schedule_s=1,1,2,2,4"]
        api_a = self.api(*hooks)
        api_b = self.api("--stages", "notify", *hooks)  # api A owns the vector index
        self.worker("w1")
        receiver = wh.Receiver([])
        try:
            created = wh.create_webhook(api_b, receiver.url, ["processing.completed"])
            self.assertEqual(created.status, 201, created.body)
            receiver.secrets.append(created.json()["secret"])
            ids = []
            for i in range(20):
                server = api_a if i % 2 == 0 else api_b
                r = server.upload(e2e.png_bytes(44, 40, seed=70000 + i), "w.png")
                self.assertEqual(r.status, 202, r.body)
                ids.append(r.json()["imageId"])
            receiver.wait(lambda ds: len({d["json"]["data"]["imageId"] for d in ds}) >= 20, timeout=120,
                          what="20 completions")
            time.sleep(2)  # a second sender, if there were one, would have sent by now
            completed = receiver.of_type("processing.completed")
            self.assertEqual({d["json"]["data"]["imageId"] for d in completed}, set(ids))
            self.assertTrue(all(d["valid"] for d in completed))
            per_id = {}
            for d in completed:
                per_id[d["id"]] = per_id.get(d["id"], 0) + 1
            self.assertEqual(len(per_id), 20)
            self.assertEqual(set(per_id.values()), {1}, "a delivery was sent twice")
            sent = 0
            for server in (api_a, api_b):
                m = re.search(r'deeplens_webhook_deliveries_total\{outcome="succeeded"\} (\d+)',
                              server.request("GET", "/metrics").body.decode())
                sent += int(m.group(1)) if m else 0
            self.assertEqual(sent, 20)  # the two dispatchers' successes add up to one each
        finally:
            receiver.stop()

    def test_api_and_two_workers_share_the_work_and_survive_a_killed_worker(self):
        api = self.api()
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
        # A message that is not JSON, produced by an independent client: dead-lettered, nothing stops.
        bootstrap = self.bus[len("kafka://"):]
        poison = subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", "deeplens.features.extraction", "-k", "img_poison"],
                                input="this is not json", capture_output=True, text=True, timeout=60)
        self.assertEqual(poison.returncode, 0, poison.stderr)
        upload(TOTAL - len(ids), seed)
        for image_id in ids:
            self.assertEqual(api.wait_status(image_id, timeout=180)["status"], "completed", image_id)
        metrics = api.request("GET", "/metrics", key=None).body.decode()
        vectors = re.search(r'deeplens_index_vectors\{collection="tenant_default_builtin_vectors"\} (\d+)', metrics)
        self.assertIsNotNone(vectors, metrics[-2000:])
        self.assertEqual(int(vectors.group(1)), TOTAL, "exactly one vector per image")
        # An independent client (kcat) reads every topic: keys are imageIds, the headers are there,
        # and every payload validates against the JSON Schemas.
        payloads = []
        for topic, event_type in (("deeplens.images.uploaded", "image.uploaded"),
                                  ("deeplens.features.extraction", "feature.extraction.requested"),
                                  ("deeplens.vectors.indexing", "vector.indexing.requested"),
                                  ("deeplens.processing.completed", "processing.completed")):
            out = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                                  "-f", "%k\\t%h\\t%s\\n"], capture_output=True, text=True, timeout=120)
            rows = [l.split("\t", 2) for l in out.stdout.splitlines() if l]
            rows = [r for r in rows if r[0] != "img_poison"]
            self.assertGreaterEqual(len(rows), TOTAL, f"{topic}: {out.stderr}")
            for key, headers, payload in rows:
                event = json.loads(payload)
                self.assertEqual(key, event["data"]["imageId"], topic)
                for h in (f"eventType={event_type}", "eventVersion=1.0", "correlationId=evt_", "tenantId=default"):
                    self.assertIn(h, headers, topic)
                payloads.append(payload)
            if topic == "deeplens.processing.completed":
                # Exactly one completion event (one eventId) per image. The outbox is published
                # at least once: a relay killed with w2 between publishing rows and marking them
                # sent leaves them to another relay, so an event may appear twice, same eventId.
                event_ids = {}
                for key, _, payload in rows:
                    event_ids.setdefault(key, set()).add(json.loads(payload)["eventId"])
                self.assertEqual(len(event_ids), TOTAL, "a completion event for every image")
                twice = {k: v for k, v in event_ids.items() if len(v) != 1}
                self.assertEqual(twice, {}, "one completion event per image")
                if len(rows) != TOTAL:
                    print(f"note: {len(rows) - TOTAL} completion event(s) published again after the worker was killed",
                          file=sys.stderr)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        check = subprocess.run(["/usr/bin/python3", os.path.join(root, "tests/integration/events/validate_events.py"),
                                "--schemas", os.path.join(root, "schemas")], input="\n".join(payloads) + "\n",
                               capture_output=True, text=True, timeout=300)
        self.assertEqual(check.returncode, 0, check.stdout[-3000:] + check.stderr[-2000:])
        dlq = subprocess.run([e2e.DEELENS_BIN, "dlq", "list", "--json", "--set", "data_dir=" + os.path.join(self.dir, "data"),
                              "--set", "bus.url=" + self.bus, *self.metadata_set_args()], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(dlq.returncode, 0, dlq.stderr)
        letters = [json.loads(l) for l in dlq.stdout.splitlines() if l]
        self.assertEqual([l["errorCode"] for l in letters], ["UNDECODABLE"], dlq.stdout)
        self.assertEqual(api.stop(), 0)
        w1.terminate()
        self.assertEqual(w1.wait(timeout=60), 0)

    def broker_command(self, line):
        self.broker.stdin.write((line + "\n").encode())
        self.broker.stdin.flush()
        answer = self.broker.stdout.readline().decode().strip()
        self.assertTrue(answer.startswith("ok"), f"{line}: {answer}")

    def test_uploads_are_accepted_while_every_broker_is_down_and_complete_after(self):
        api = self.api()
        self.worker("w1")
        first = api.upload(e2e.png_bytes(40, 40, seed=30000), "before.png")
        self.assertEqual(first.status, 202)
        api.wait_status(first.json()["imageId"], timeout=120)
        for broker_id in (1, 2, 3):
            self.broker_command(f"down {broker_id}")
        started = time.time()
        ids = []
        for i in range(20):
            r = api.upload(e2e.png_bytes(40, 40, seed=30001 + i), "outage.png")
            self.assertEqual(r.status, 202, r.body)  # accepted: the event waits in the outbox
            ids.append(r.json()["imageId"])
        self.assertEqual(api.status(ids[0]).json()["status"], "uploaded")
        time.sleep(max(0.0, 10 - (time.time() - started)))  # brokers stay down for 10 s
        for broker_id in (1, 2, 3):
            self.broker_command(f"up {broker_id}")
        for image_id in ids:
            self.assertEqual(api.wait_status(image_id, timeout=180)["status"], "completed", image_id)
        self.assertEqual(api.stop(), 0)


class KafkaPostgresMultiProcessTest(KafkaMultiProcessTest):
    """The same tests with the metadata store on a real PostgreSQL server (issue #7)."""

    @classmethod
    def setUpClass(cls):
        cls.pg = e2e.PostgresServer()

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def metadata_args(self):
        return ["--metadata", self.pg.url]

    def test_postgres_restart_answers_503_then_recovers_by_itself(self):
        api = self.api()
        self.worker("w1")
        before = api.upload(e2e.png_bytes(40, 40, seed=40000), "before.png")
        self.assertEqual(before.status, 202, before.body)
        api.wait_status(before.json()["imageId"], timeout=120)  # every process is up and running
        in_flight = api.upload(e2e.png_bytes(40, 40, seed=40003), "in-flight.png")
        self.assertEqual(in_flight.status, 202, in_flight.body)
        self.pg.stop()
        try:
            down = api.upload(e2e.png_bytes(40, 40, seed=40001), "down.png")
            self.assertEqual(down.status, 503, down.body)
            body = down.json()
            self.assertEqual(body["error"]["code"], "UNAVAILABLE")
            self.assertIn("PostgreSQL", body["error"]["message"])
            self.assertEqual(api.request("GET", "/readyz", key=None).status, 503)
        finally:
            self.pg.start()
        deadline = time.time() + 60
        after = None
        while time.time() < deadline:
            after = api.upload(e2e.png_bytes(40, 40, seed=40002), "after.png")
            if after.status == 202:
                break
            time.sleep(0.5)
        self.assertEqual(after.status, 202, after.body)
        for image_id in (before.json()["imageId"], in_flight.json()["imageId"], after.json()["imageId"]):
            self.assertEqual(api.wait_status(image_id, timeout=120)["status"], "completed")
        self.assertEqual(api.stop(), 0)

    def setUp(self):
        super().setUp()
        # A fresh schema per test: drop what an earlier test left.
        subprocess.run(self.pg.as_user + ["psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres", "-d",
                                          "deeplens", "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"],
                       check=True, capture_output=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
