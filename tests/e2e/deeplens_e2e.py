"""Shared helpers for end-to-end tests: a `deeplens serve` child process on a temp data directory
and a free port, a small HTTP client (multipart uploads), and synthetic PNGs. Standard library
only, run with Debian's /usr/bin/python3."""
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib

DEELENS_BIN = os.environ.get("DEEPLENS_BINARY", "deeplens")
SKIMAGE = "/usr/lib/python3/dist-packages/skimage/data"
OPENCV = "/usr/share/doc/opencv-doc/examples/data"


def png_bytes(width, height, seed=0, declared=None):
    """A valid RGB PNG of random-ish colour blocks; `declared` overrides the IHDR size (bombs)."""
    rng = random.Random(seed)
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    w, h = declared or (width, height)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    rows = bytearray()
    block = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(16)]
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows.extend(block[(x // 8 + y // 8) % 16])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")


def multipart(fields, files):
    boundary = "----deeplens" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n".encode()
        out += value.encode() if isinstance(value, str) else value
        out += b"\r\n"
    for name, (filename, data) in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class Reply:
    def __init__(self, status, body, headers):
        self.status, self.body, self.headers = status, body, headers

    def json(self):
        return json.loads(self.body)


class Server:
    """`deeplens serve` on a temp data dir; start() waits for its banner."""

    def __init__(self, data_dir=None, extra_args=(), env=None):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="deeplens-e2e-")
        self.extra_args = list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.url = None
        self.key = self.env.get("DEEPLENS_AUTH_DEFAULT_KEY")

    def start(self, timeout=60, command="serve"):
        self.log = open(os.path.join(self.data_dir, command + ".log"), "ab")
        self.proc = subprocess.Popen([DEELENS_BIN, command, "--data-dir", self.data_dir, "--listen", "127.0.0.1:0"]
                                     + self.extra_args, stdout=subprocess.PIPE, stderr=self.log, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                self.log.close()
                raise RuntimeError(f"deeplens serve exited early ({self.proc.wait()}), see {self.data_dir}/serve.log")
            m = re.search(r"serving on (http://\S+)", line)
            if m:
                self.url = m.group(1)
            m = re.search(r"(dlk_[0-9a-f]+)", line)
            if m:
                self.key = m.group(1)
            if line.startswith("Press Ctrl-C"):
                return self
        raise RuntimeError("deeplens serve did not start in time")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        code = self.proc.returncode if self.proc else None
        if self.proc:
            self.proc.stdout.close()
            self.log.close()
        self.proc = None
        return code

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def request(self, method, path, body=None, content_type=None, key="default", headers=None, timeout=60):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        k = self.key if key == "default" else key
        if k:
            req.add_header("Authorization", f"Bearer {k}")
        if content_type:
            req.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Reply(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.read(), dict(e.headers))

    def upload(self, data, filename="photo.jpg", fields=None, key="default", headers=None):
        body, ctype = multipart(fields or {}, {"file": (filename, data)})
        return self.request("POST", "/api/v1/images/upload", body, ctype, key=key, headers=headers)

    def status(self, image_id, key="default"):
        return self.request("GET", f"/api/v1/images/{image_id}/status", key=key)

    def wait_status(self, image_id, wanted=("completed", "failed"), timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            r = self.status(image_id)
            if r.status == 200:
                last = r.json()
                if last["status"] in wanted:
                    return last
            time.sleep(0.05)
        raise AssertionError(f"{image_id} did not reach {wanted}: {last}")

    def image_files(self):
        root = os.path.join(self.data_dir, "blobs")
        found = []
        for dirpath, _, files in os.walk(root):
            if "/images/" in dirpath + "/" and ".tmp" not in dirpath:
                found += [os.path.join(dirpath, f) for f in files]
        return found

    def run_cli(self, *args):
        return subprocess.run([DEELENS_BIN, *args, "--set", f"data_dir={self.data_dir}"] if args[0] in ("tenants", "dlq")
                              else [DEELENS_BIN, *args], capture_output=True, text=True, env=self.env, timeout=60)


MODELS = os.environ.get("DEEPLENS_TEST_MODELS",
                        os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "models"))
MOBILENET = os.path.abspath(os.path.join(MODELS, "mobilenet_v2_1.0_224_quint8.pb"))


def mobilenet_server():
    """A started `deeplens serve` whose config has mobilenet_v2 from ../shared/models (the default
    model). Fails, never skips, when the models are missing."""
    if not os.path.exists(MOBILENET):
        raise AssertionError(f"the models directory is missing: {MOBILENET} (set DEEPLENS_TEST_MODELS, "
                             "or leave model tests out with -LE models)")
    server = Server()
    config = os.path.join(server.data_dir, "deeplens.toml")
    with open(config, "w") as f:
        f.write(f'''[[models]]
name = "mobilenet_v2"
file = "{MOBILENET}"
output_layer = "embedding"
dimension = 1280
mean = 127.5
scale = 0.00784313725490196
''')
    server.extra_args = ["--config", config]
    server.start()
    return server


def real_photo(name):
    for folder in (SKIMAGE, OPENCV):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                return f.read()
    raise FileNotFoundError(name)


class PostgresServer:
    """A real PostgreSQL 15 server in a temp dir on a free port, run as the postgres user (initdb and
    postgres refuse root)."""

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self):
        import pwd
        import socket
        self.dir = tempfile.mkdtemp(prefix="deeplens-pg-e2e-")
        os.makedirs(os.path.join(self.dir, "sock"))
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.dir, os.path.join(self.dir, "sock")):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run(self.as_user + [f"{self.BIN}/initdb", "-D", f"{self.dir}/data", "-U", "postgres", "-A", "trust",
                                       "--no-sync", "--no-instructions"], check=True, capture_output=True)
        self.start()
        subprocess.run(self.as_user + ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                                       "CREATE DATABASE deeplens"], check=True, capture_output=True)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/deeplens"

    def start(self):
        self.proc = subprocess.Popen(self.as_user + [f"{self.BIN}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port),
                                                     "-k", f"{self.dir}/sock", "-c", "listen_addresses=127.0.0.1",
                                                     "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            if subprocess.run([f"{self.BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start")

    def stop(self):
        # "fast" shutdown: disconnects clients (a plain SIGTERM would wait for them to leave).
        subprocess.run(self.as_user + [f"{self.BIN}/pg_ctl", "stop", "-m", "fast", "-D", f"{self.dir}/data"],
                       capture_output=True, timeout=60)
        self.proc.wait(timeout=60)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class AzuriteServer:
    """Azurite's blob service (tools/azurite, installed by scripts/bootstrap) on a free port with a
    temp workspace. stop() is a clean SIGTERM (Azurite saves its metadata); start() brings it back
    on the same port and workspace."""

    ACCOUNT = "devstoreaccount1"
    KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "tools/azurite/node_modules/.bin/azurite-blob")

    def __init__(self):
        import socket
        if not os.path.exists(self.BIN):
            raise RuntimeError(f"Azurite not installed at {self.BIN} (run scripts/bootstrap)")
        self.dir = tempfile.mkdtemp(prefix="deeplens-azurite-e2e-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/{self.ACCOUNT}"
        self.proc = None
        self.start()

    def connection_string(self, key=None):
        return (f"DefaultEndpointsProtocol=http;AccountName={self.ACCOUNT};AccountKey={key or self.KEY};"
                f"BlobEndpoint={self.endpoint};")

    def signed(self, method, path, query=None):
        """A Shared Key request signed here (an implementation independent of DeepLens's); returns
        (status, body)."""
        import base64
        import email.utils
        import hashlib
        import hmac
        query = query or {}
        date = email.utils.formatdate(usegmt=True)
        to_sign = (f"{method}\n" + "\n" * 11 + f"x-ms-date:{date}\nx-ms-version:2021-12-02\n"
                   f"/{self.ACCOUNT}/{self.ACCOUNT}{path}" + "".join(f"\n{k}:{query[k]}" for k in sorted(query)))
        sig = base64.b64encode(hmac.new(base64.b64decode(self.KEY), to_sign.encode(), hashlib.sha256).digest())
        url = f"{self.endpoint}{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, method=method, headers={
            "x-ms-date": date, "x-ms-version": "2021-12-02", "Authorization": f"SharedKey {self.ACCOUNT}:{sig.decode()}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def list_blobs(self, container):
        """Blob names in a container; [] when the container does not exist."""
        import xml.etree.ElementTree as ET
        names, marker = [], ""
        while True:
            status, body = self.signed("GET", f"/{container}",
                                       {"comp": "list", "restype": "container", **({"marker": marker} if marker else {})})
            if status == 404:
                return []
            assert status == 200, body
            root = ET.fromstring(body)
            names += [b.findtext("Name") for b in root.iter("Blob")]
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return names

    def start(self):
        import socket
        self.proc = subprocess.Popen([self.BIN, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
                                      self.dir, "--silent", "--disableTelemetry"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("Azurite exited during start-up")
                time.sleep(0.05)
        raise RuntimeError("Azurite did not start within 30 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class QdrantStandin:
    """The contract-checking Qdrant stand-in (tests/support/qdrant_standin.py: exact search, every
    request and response validated against Qdrant's OpenAPI document) on a free port, with its state
    in a file so that stop() + start() keeps the points as a real Qdrant restart would."""

    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    SCRIPT = os.path.join(ROOT, "tests/support/qdrant_standin.py")
    SPEC = os.environ.get("DEEPLENS_QDRANT_OPENAPI", os.path.join(ROOT, "../shared/specs/qdrant/openapi-1.19.json"))

    def __init__(self):
        import socket
        if not os.path.exists(self.SPEC):
            raise RuntimeError(f"Qdrant's OpenAPI document is not at {self.SPEC} (set DEEPLENS_QDRANT_OPENAPI)")
        self.dir = tempfile.mkdtemp(prefix="deeplens-qdrant-e2e-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "standin.log"), "ab")
        self.proc = subprocess.Popen(["/usr/bin/python3", self.SCRIPT, "--spec", self.SPEC, "--port", str(self.port),
                                      "--require-tenant-filter", "--state", os.path.join(self.dir, "state.pickle")],
                                     stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on"):
            raise RuntimeError(f"the Qdrant stand-in did not start ({self.proc.wait()}), see {self.dir}/standin.log")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        self.proc = None

    def violations(self):
        with urllib.request.urlopen(self.url + "/__standin/violations", timeout=30) as r:
            return json.loads(r.read())["violations"]

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())["result"]

    def cleanup(self):
        if self.proc is not None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
