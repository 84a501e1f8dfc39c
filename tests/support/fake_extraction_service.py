#!/usr/bin/python3
"""A small real HTTP feature-extraction service for tests (the spec's /extract-features contract).

  /usr/bin/python3 fake_extraction_service.py [--request-log FILE] [--port N]

Binds 127.0.0.1 on a free port (or N) and prints "PORT <n>" on stdout once it accepts connections.
POST /<mode>/extract-features with {"imageId", "modelName", "image" (base64), "normalize"}:

  ok/dim/<n>   200 {"features": the decoded image bytes as numbers, zero-padded/truncated to n,
               L2-normalised when "normalize" is true; "processingTimeMs"; "modelVersion": "fake-1"}
  slow/<ms>    sleeps <ms> milliseconds, then answers like ok/dim/4
  status/<n>   answers HTTP <n> with a plain-text body
  badjson      200 with a body that is not JSON
  nofeatures   200 {"processingTimeMs": 1}
  strings      200 {"features": ["a", "b", "c", "d"]}

A request that breaks the contract (not JSON, a missing or mistyped field, bad base64) gets 400.
With --request-log, every valid request is appended as one JSON line (without the image, but
with its decoded length) so tests can check what the client sent. Stops on SIGTERM.
"""
import argparse
import base64
import binascii
import json
import math
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    request_log = None

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        parts = [p for p in self.path.split("/") if p]
        if not parts or parts[-1] != "extract-features":
            return self.reply(404, "not found", "text/plain")
        mode = parts[:-1]
        try:
            req = json.loads(raw)
            assert isinstance(req, dict)
            assert isinstance(req["imageId"], str)
            assert isinstance(req["modelName"], str)
            assert isinstance(req["normalize"], bool)
            image = base64.b64decode(req["image"], validate=True)
        except (ValueError, KeyError, AssertionError, TypeError, binascii.Error) as e:
            return self.reply(400, "bad request: %r" % (e,), "text/plain")
        if Handler.request_log:
            with open(Handler.request_log, "a") as f:
                f.write(json.dumps({"path": self.path, "imageId": req["imageId"],
                                    "modelName": req["modelName"], "normalize": req["normalize"],
                                    "imageBytes": len(image),
                                    "contentType": self.headers.get("Content-Type")}) + "\n")

        dim = 4
        if mode[:1] == ["slow"]:
            time.sleep(int(mode[1]) / 1000.0)
        elif mode[:1] == ["status"]:
            return self.reply(int(mode[1]), "simulated failure %s" % mode[1], "text/plain")
        elif mode == ["badjson"]:
            return self.reply(200, "<html>not json</html>")
        elif mode == ["nofeatures"]:
            return self.reply(200, json.dumps({"processingTimeMs": 1}))
        elif mode == ["strings"]:
            return self.reply(200, json.dumps({"features": ["a", "b", "c", "d"]}))
        elif mode[:2] == ["ok", "dim"]:
            dim = int(mode[2])
        else:
            return self.reply(404, "unknown mode %s" % "/".join(mode), "text/plain")

        features = [float(b) for b in image[:dim]] + [0.0] * max(0, dim - len(image))
        if req["normalize"]:
            norm = math.sqrt(sum(x * x for x in features))
            if norm > 0:
                features = [x / norm for x in features]
        self.reply(200, json.dumps({"features": features, "processingTimeMs": 1,
                                    "modelVersion": "fake-1"}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--request-log")
    parser.add_argument("--port", type=int, default=0, help="a fixed port (a client configured before it started)")
    args = parser.parse_args()
    Handler.request_log = args.request_log
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
