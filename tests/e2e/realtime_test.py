"""End-to-end tests of real-time status (issue #14): a real `deeplens serve`, real WebSocket clients
(python3-websockets, an independent implementation of RFC 6455) and curl for Server-Sent Events.

Covers: 20 uploads watched over a tenant subscription (one ProcessingCompleted per image, an ordered
StatusChanged sequence for each), the snapshot for a late subscriber, tenant isolation, resume with
`since` (no gaps, no duplicates), in-band auth for browsers, a client that never reads (closed, memory
bounded), bad frames and floods, per-tenant connection limits, and the event stream."""
import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

import jsonschema
import websockets  # Debian's python3-websockets
import yaml

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402

# The transitions of one image through the single-model pipeline, in order.
TRANSITIONS = ["uploaded", "step.started", "step.completed", "step.started", "completed"]


SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "..", "schemas")


def realtime_validator():
    """Validates a server message against schemas/asyncapi-realtime.yaml (the pipeline events it
    carries against their own JSON Schemas, inlined for the resolver)."""
    with open(os.path.join(SCHEMAS, "asyncapi-realtime.yaml")) as f:
        doc = yaml.safe_load(f)
    event_data = doc["components"]["messages"]["Event"]["payload"]["properties"]["data"]["oneOf"]
    store = {}
    for i, ref in enumerate(event_data):
        if ref["$ref"].startswith("./"):
            with open(os.path.join(SCHEMAS, ref["$ref"][2:])) as f:
                schema = json.load(f)
            store[schema["$id"]] = schema
            event_data[i] = {"$ref": schema["$id"]}
    names = {"authenticated": "Authenticated", "subscribed": "Subscribed", "event": "Event", "reset": "Reset",
             "unsubscribed": "Unsubscribed", "pong": "Pong", "error": "Error"}

    def validate(message):
        name = names[message["type"]]
        root = dict(doc, **{"$ref": f"#/components/messages/{name}/payload"})
        resolver = jsonschema.RefResolver.from_schema(root, store=store)
        jsonschema.Draft202012Validator(root, resolver=resolver).validate(message)
    return validate


def run(coro):
    return asyncio.run(coro)


def ws_url(server):
    return server.url.replace("http://", "ws://") + "/api/v1/ws"


def new_tenant(server, slug):
    r = subprocess.run([e2e.DEELENS_BIN, "tenants", "create", slug, "--data-dir", server.data_dir],
                       capture_output=True, text=True, env=server.env, timeout=60)
    assert r.returncode == 0, r.stderr
    return re.search(r"api key: (dlk_[0-9a-f]+)", r.stdout).group(1)


async def connect(server, key=None):
    headers = {"Authorization": f"Bearer {key or server.key}"} if key != "" else {}
    return await websockets.connect(ws_url(server), extra_headers=headers, max_size=None, ping_interval=None)


async def recv_json(ws, timeout=30):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws, message, timeout=30):
    """Sends message and returns the first reply that is not an event."""
    await ws.send(json.dumps(message))
    while True:
        m = await recv_json(ws, timeout)
        if m["type"] != "event":
            return m


def upload_pngs(server, count, seed):
    ids = []
    for i in range(count):
        r = server.upload(e2e.png_bytes(64 + i, 48, seed=seed * 1000 + i), filename=f"rt{seed}-{i}.png")
        assert r.status == 202, r.body
        ids.append(r.json()["imageId"])
    return ids


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(server, name):
    text = server.request("GET", "/metrics", key=None).body.decode()
    m = re.search(rf"^{name}(?:{{}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


class RealtimeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = e2e.Server(extra_args=["--set", "push.send_queue_bytes=262144",
                                            "--set", "push.sse_heartbeat_s=1"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def test_twenty_uploads_one_completion_each_in_order(self):
        async def scenario():
            ws = await connect(self.server)
            sub = await request(ws, {"type": "subscribe", "id": 1, "topic": "tenant"})
            self.assertEqual(sub["type"], "subscribed", sub)
            self.assertEqual(sub["id"], 1)
            ids = upload_pngs(self.server, 20, seed=1)
            validate = realtime_validator()
            validate(sub)
            events = {i: [] for i in ids}
            completed = {i: 0 for i in ids}
            seqs = []
            deadline = time.time() + 120
            while sum(completed.values()) < len(ids) and time.time() < deadline:
                m = await recv_json(ws, 60)
                validate(m)  # as schemas/asyncapi-realtime.yaml describes it
                self.assertEqual(m["type"], "event", m)
                self.assertEqual(m["topic"], "tenant")
                seqs.append(m["seq"])
                image = m["data"]["imageId"] if m["event"] == "StatusChanged" else m["data"]["data"]["imageId"]
                self.assertIn(image, events, "an event of an image this test did not upload")
                if m["event"] == "ProcessingCompleted":
                    completed[image] += 1
                    self.assertEqual(m["data"]["eventType"], "processing.completed")
                    self.assertEqual(m["data"]["data"]["status"], "success")
                else:
                    self.assertEqual(m["event"], "StatusChanged")
                    events[image].append(m["data"])
            # Anything more (a duplicate completion) would arrive promptly.
            try:
                while True:
                    m = await recv_json(ws, 1.5)
                    if m["event"] == "ProcessingCompleted":
                        completed[m["data"]["data"]["imageId"]] += 1
            except asyncio.TimeoutError:
                pass
            await ws.close()
            return ids, events, completed, seqs

        ids, events, completed, seqs = run(scenario())
        self.assertEqual(completed, {i: 1 for i in ids})
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(seqs), len(set(seqs)))
        for image in ids:
            transitions = [d["transition"] for d in events[image]]
            self.assertEqual(transitions, TRANSITIONS, image)
            steps = [d.get("step") for d in events[image]]
            self.assertEqual(steps, [None, "feature_extraction", "feature_extraction", "vector_indexing", None])
            self.assertEqual(events[image][-1]["status"], "completed")
            self.assertTrue(events[image][-1]["searchableAfter"])
            # The status API's own fields are there.
            for field in ("imageId", "status", "processingSteps", "lastUpdated", "estimatedTimeRemaining"):
                self.assertIn(field, events[image][0])

    def test_subscribe_after_completion_gets_a_snapshot(self):
        image = upload_pngs(self.server, 1, seed=2)[0]
        self.server.wait_status(image)

        async def scenario():
            ws = await connect(self.server)
            sub = await request(ws, {"type": "subscribe", "id": 7, "topic": "image:" + image})
            self.assertEqual(sub["type"], "subscribed", sub)
            snap = await recv_json(ws, 10)
            await ws.close()
            return sub, snap

        sub, snap = run(scenario())
        self.assertEqual(snap["type"], "event")
        self.assertEqual(snap["event"], "StatusChanged")
        self.assertEqual(snap["topic"], "image:" + image)
        self.assertEqual(snap["seq"], sub["seq"])
        self.assertEqual(snap["data"]["transition"], "snapshot")
        self.assertEqual(snap["data"]["status"], "completed")
        self.assertEqual(snap["data"]["imageId"], image)

    def test_foreign_tenant_gets_not_found_and_nothing(self):
        other_key = new_tenant(self.server, "rt-other")
        mine = upload_pngs(self.server, 1, seed=3)[0]

        async def scenario():
            ws = await connect(self.server, key=other_key)
            err = await request(ws, {"type": "subscribe", "id": 1, "topic": "image:" + mine})
            sub = await request(ws, {"type": "subscribe", "id": 2, "topic": "tenant"})
            upload_pngs(self.server, 3, seed=4)  # the default tenant's
            received = []
            try:
                while True:
                    received.append(await recv_json(ws, 3))
            except asyncio.TimeoutError:
                pass
            await ws.close()
            return err, sub, received

        err, sub, received = run(scenario())
        self.assertEqual(err["type"], "error")
        self.assertEqual(err["id"], 1)
        self.assertEqual(err["error"]["code"], "NOT_FOUND")
        self.assertEqual(sub["type"], "subscribed")
        self.assertEqual(received, [], "a tenant received another tenant's events")

    def test_resume_with_since_no_gaps_no_duplicates(self):
        async def scenario():
            ws = await connect(self.server)
            sub = await request(ws, {"type": "subscribe", "id": 1, "topic": "tenant"})
            first = upload_pngs(self.server, 2, seed=5)
            seen = []
            while sum(1 for m in seen if m["event"] == "ProcessingCompleted") < 2:
                seen.append(await recv_json(ws))
            last = seen[-1]["seq"]
            await ws.close()
            missed_ids = upload_pngs(self.server, 5, seed=6)
            for i in missed_ids:
                self.server.wait_status(i)
            time.sleep(0.5)  # the feed publishes right after the commit
            ws = await connect(self.server)
            sub2 = await request(ws, {"type": "subscribe", "id": 1, "topic": "tenant", "since": last})
            replay = []
            try:
                while True:
                    replay.append(await recv_json(ws, 2))
            except asyncio.TimeoutError:
                pass
            await ws.close()
            return sub, first, seen, last, sub2, missed_ids, replay

        sub, first, seen, last, sub2, missed_ids, replay = run(scenario())
        self.assertEqual(sub2["type"], "subscribed")
        seqs = [m["seq"] for m in replay]
        self.assertTrue(seqs, "nothing replayed")
        self.assertEqual(seqs, list(range(last + 1, last + 1 + len(seqs))), "gaps or duplicates in the replay")
        self.assertEqual(seqs[-1], sub2["seq"])
        completed = [m["data"]["data"]["imageId"] for m in replay if m["event"] == "ProcessingCompleted"]
        self.assertEqual(sorted(completed), sorted(missed_ids))

        async def stale():  # a seq from before this server's history: reset
            ws = await connect(self.server)
            r1 = await request(ws, {"type": "subscribe", "id": 3, "topic": "tenant", "since": 5})
            r2 = await recv_json(ws, 5)
            await ws.close()
            return r1, r2

        r1, r2 = run(stale())
        self.assertEqual(r1["type"], "subscribed")
        self.assertEqual(r2["type"], "reset")
        self.assertEqual(r2["id"], 3)

    def test_browser_auth_message_and_timeout(self):
        async def scenario():
            ws = await connect(self.server, key="")
            early = await request(ws, {"type": "subscribe", "id": 1, "topic": "tenant"})
            ok = await request(ws, {"type": "auth", "apiKey": self.server.key})
            sub = await request(ws, {"type": "subscribe", "id": 1, "topic": "tenant"})
            pong = await request(ws, {"type": "ping"})
            await ws.close()
            bad = await connect(self.server, key="")
            err = await request(bad, {"type": "auth", "apiKey": "dlk_wrong"})
            await bad.wait_closed()
            silent = await connect(self.server, key="")
            t0 = time.time()
            await silent.wait_closed()
            return early, ok, sub, pong, err, bad.close_code, silent.close_code, time.time() - t0

        early, ok, sub, pong, err, bad_code, silent_code, waited = run(scenario())
        self.assertEqual(early["error"]["code"], "UNAUTHENTICATED")
        self.assertEqual(ok["type"], "authenticated")
        self.assertEqual(sub["type"], "subscribed")
        self.assertEqual(pong["type"], "pong")
        self.assertEqual(err["error"]["code"], "UNAUTHENTICATED")
        self.assertEqual(bad_code, 4401)
        self.assertEqual(silent_code, 4401)
        self.assertGreater(waited, 4)
        self.assertLess(waited, 8)

        async def wrong_header():
            await connect(self.server, key="dlk_" + "0" * 64)

        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as ctx:
            run(wrong_header())
        self.assertEqual(ctx.exception.status_code, 401)

    def test_bad_frames_and_floods(self):
        async def scenario():
            ws = await connect(self.server)
            out = {}
            await ws.send("{not json")
            out["malformed"] = await recv_json(ws)
            out["unknown"] = await request(ws, {"type": "teleport"})
            out["bad_topic"] = await request(ws, {"type": "subscribe", "id": 1, "topic": "image:../../etc"})
            out["no_id"] = await request(ws, {"type": "subscribe", "topic": "tenant"})
            out["dup1"] = await request(ws, {"type": "subscribe", "id": 9, "topic": "tenant"})
            out["dup2"] = await request(ws, {"type": "subscribe", "id": 9, "topic": "tenant"})
            # A flood: 300 subscribes at once (past the message budget), then, once it refilled,
            # more than the subscriptions a connection may hold.
            async def burst(ids):
                for i in ids:
                    await ws.send(json.dumps({"type": "subscribe", "id": i, "topic": "tenant"}))
                codes = []
                for _ in ids:
                    m = await recv_json(ws)
                    codes.append(m["type"] if m["type"] != "error" else m["error"]["code"])
                return codes
            out["flood"] = await burst(range(100, 400))
            await asyncio.sleep(2.5)  # the message budget refills
            out["over_limit"] = await burst(range(1000, 1020))
            out["after_flood"] = await request(ws, {"type": "ping"})
            await ws.close()
            big = await connect(self.server)
            await big.send("x" * (100 * 1024))
            await big.wait_closed()
            out["big_code"] = big.close_code
            binary = await connect(self.server)
            await binary.send(b"\x00\x01")
            await binary.wait_closed()
            out["binary_code"] = binary.close_code
            return out

        out = run(scenario())
        self.assertEqual(out["malformed"]["error"]["code"], "INVALID_MESSAGE")
        self.assertEqual(out["unknown"]["error"]["code"], "UNKNOWN_TYPE")
        self.assertEqual(out["bad_topic"]["error"]["code"], "INVALID_TOPIC")
        self.assertEqual(out["no_id"]["error"]["code"], "INVALID_MESSAGE")
        self.assertEqual(out["dup1"]["type"], "subscribed")
        self.assertEqual(out["dup2"]["error"]["code"], "DUPLICATE_ID")
        self.assertIn("RATE_LIMITED", out["flood"])
        self.assertLessEqual(out["flood"].count("subscribed"), 99)
        self.assertIn("TOO_MANY_SUBSCRIPTIONS", out["over_limit"])
        self.assertEqual(out["flood"].count("subscribed") + out["over_limit"].count("subscribed"), 99)
        self.assertEqual(out["after_flood"]["type"], "pong")
        self.assertEqual(out["big_code"], 1009)
        self.assertEqual(out["binary_code"], 1003)
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)

    def test_a_client_that_never_reads_is_closed_and_memory_stays_bounded(self):
        # History to replay: a reading client learns where this test's events start.
        async def learn():
            ws = await connect(self.server)
            await request(ws, {"type": "subscribe", "id": 1, "topic": "tenant"})
            ids = upload_pngs(self.server, 10, seed=7)
            first = None
            done = 0
            while done < len(ids):
                m = await recv_json(ws)
                first = first or m["seq"]
                done += m["event"] == "ProcessingCompleted"
            await ws.close()
            return first

        since = run(learn()) - 1
        host, port = self.server.url.split("//")[1].split(":")

        def stalled_client():
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, int(port)))
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                       f"Authorization: Bearer {self.server.key}\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            assert b" 101 " in head, head
            for i in range(60):  # every subscription replays the whole history
                payload = json.dumps({"type": "subscribe", "id": i, "topic": "tenant", "since": since}).encode()
                mask = os.urandom(4)
                frame = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask
                frame += bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
                try:
                    s.sendall(frame)
                except (BrokenPipeError, ConnectionResetError):
                    break  # already closed by the server: what this test wants
            return s

        before = rss_kib(self.server.proc.pid)
        stalled = [stalled_client() for _ in range(20)]
        closed = 0
        deadline = time.time() + 30
        for s in stalled:  # now read: what the kernel holds, then the end of the stream
            s.settimeout(max(1, deadline - time.time()))
            try:
                while s.recv(65536):
                    pass
                closed += 1
            except (ConnectionResetError, socket.timeout):
                closed += isinstance(sys.exc_info()[1], ConnectionResetError)
            s.close()
        after = rss_kib(self.server.proc.pid)
        self.assertEqual(closed, len(stalled), "a client that did not read was not closed")
        self.assertLess(after - before, 64 * 1024, f"RSS grew {after - before} KiB for 20 stalled clients")
        self.assertEqual(self.server.request("GET", "/healthz", key=None).status, 200)

    def test_event_stream_with_curl_and_last_event_id(self):
        image = upload_pngs(self.server, 1, seed=8)[0]
        curl = ["curl", "-sN", "--max-time", "20", "-H", f"Authorization: Bearer {self.server.key}"]
        url = f"{self.server.url}/api/v1/events?topic=image:{image}"
        p = subprocess.Popen(curl + [url], stdout=subprocess.PIPE, text=True)
        frames, current = [], {}
        heartbeats = 0
        for line in p.stdout:
            line = line.rstrip("\n")
            if line.startswith(":"):
                heartbeats += 1
                if any(f.get("event") == "ProcessingCompleted" or
                       (f.get("event") == "StatusChanged" and f["data"]["data"]["status"] == "completed")
                       for f in frames):
                    break
            elif line == "":
                if current:
                    frames.append(current)
                current = {}
            else:
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
        p.kill()
        p.wait()
        events = [f for f in frames if "event" in f]
        self.assertTrue(events, frames)
        self.assertEqual(events[0]["event"], "StatusChanged")  # the snapshot first
        self.assertEqual(events[0]["data"]["data"]["transition"], "snapshot")
        for f in events:
            self.assertEqual(int(f["id"]), f["data"]["seq"])
        self.assertGreaterEqual(heartbeats, 1)
        # Resume from before the snapshot's seq: only newer events, and nothing older than asked.
        first_id = int(events[0]["id"])
        r = subprocess.run(["curl", "-sN", "--max-time", "3", "-H", f"Authorization: Bearer {self.server.key}",
                            "-H", f"Last-Event-ID: {first_id}", url], capture_output=True, text=True)
        ids = [int(x) for x in re.findall(r"^id: (\d+)$", r.stdout, re.M)]
        self.assertTrue(all(i > first_id for i in ids), ids)
        bad = self.server.request("GET", "/api/v1/events?topic=image:img_nope")
        self.assertEqual(bad.status, 400)
        self.assertEqual(bad.json()["error"]["code"], "INVALID_TOPIC")
        none = self.server.request("GET", "/api/v1/events?topic=tenant", key=None)
        self.assertEqual(none.status, 401)


class ConnectionLimitTest(unittest.TestCase):
    def test_connections_per_tenant(self):
        server = e2e.Server(extra_args=["--set", "push.max_connections_per_tenant=5"]).start()
        try:
            async def scenario():
                open_ = [await connect(server) for _ in range(5)]
                with self.assertRaises(websockets.exceptions.InvalidStatusCode) as ctx:
                    await connect(server)
                status = ctx.exception.status_code
                sse = server.request("GET", "/api/v1/events")
                await open_[0].close()
                await asyncio.sleep(0.5)
                again = await connect(server)  # a slot is free again
                reply = await request(again, {"type": "ping"})
                for ws in open_[1:] + [again]:
                    await ws.close()
                return status, sse, reply

            status, sse, reply = run(scenario())
            self.assertEqual(status, 429)
            self.assertEqual(sse.status, 429)
            self.assertEqual(sse.json()["error"]["code"], "TOO_MANY_CONNECTIONS")
            self.assertEqual(reply["type"], "pong")
        finally:
            server.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
