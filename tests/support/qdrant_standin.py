#!/usr/bin/python3
"""A stand-in Qdrant server for DeepLens's tests: exact search in memory, and a contract check.

No Qdrant server can be installed on the machines these tests run on, so the Qdrant backend
(src/vectors/qdrant/) is tested against this server instead. It is NOT Qdrant: it implements the
subset of Qdrant's REST API that DeepLens uses, with exact (brute-force) cosine search. What it adds
is the contract check: every request DeepLens sends is checked against Qdrant's published OpenAPI
document (../shared/specs/qdrant/openapi-<version>.json) -- the path and method must be an operation
of the document, every query parameter must be declared and valid, and the JSON body must validate
against the operation's request schema -- and every response this server sends is validated against
the operation's response schema, so the stand-in cannot drift from Qdrant's answers either. A
violation is answered with 400 (as Qdrant would reject a bad body) and recorded; tests read the
record at GET /__standin/violations and fail on any.

Control endpoints, outside Qdrant's API (tests only):
  GET  /__standin/violations        -> {"violations": [...]}
  POST /__standin/violations/clear
  POST /__standin/faults            {"delay_ms": N, "status": 503|0}: delay every Qdrant request by
                                    N ms; answer every Qdrant request with that status (0 = normal)

With --require-tenant-filter, a request that reads, counts, searches or deletes points without a
`must` match on the payload key tenantId is also a violation: DeepLens promises that no query can
omit the tenant filter, and this checks it on the wire.

With --state FILE the collections are saved to FILE after every write and loaded at start, so a
stand-in that is killed and started again keeps its points, as Qdrant does.

Usage: qdrant_standin.py --spec FILE [--host 127.0.0.1] [--port 0] [--api-key KEY] [--require-tenant-filter]
                         [--state FILE]
Prints "listening on PORT" on stdout once it accepts connections.
"""

import argparse
import json
import math
import os
import pickle
import re
import sys
import threading
import time
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema

# RefResolver is deprecated in newer jsonschema releases but is what Debian's 4.10 offers.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def openapi_to_jsonschema(node):
    """OpenAPI 3.0 schemas -> JSON Schema: `nullable` becomes a "null" alternative."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items() if k not in ("nullable", "example", "deprecated")}
    if node.get("nullable") is True:
        keys = set(out) - {"description", "default", "format"}
        if not keys:
            return {"type": "null"}  # anyOf: [X, {"nullable": true}] means "X or null"
        if "type" in out and isinstance(out["type"], str) and "$ref" not in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class Contract:
    def __init__(self, spec_path):
        with open(spec_path) as f:
            spec = json.load(f)
        self.root = {"components": openapi_to_jsonschema(spec["components"])}
        self.validators = {}  # by schema text: building one (and its $ref cache) is the slow part
        self.operations = []  # (method, regex, template, operation)
        for template, item in spec["paths"].items():
            pattern = "^" + re.sub(r"\\\{[a-z_]+\\\}", "([^/]+)", re.escape(template)) + "$"
            for method, op in item.items():
                if method in ("get", "put", "post", "patch", "delete"):
                    self.operations.append((method.upper(), re.compile(pattern), template, op))
        # A literal path ("/collections/aliases") wins over a template ("/collections/{collection_name}").
        self.operations.sort(key=lambda o: o[2].count("{"))

    def find(self, method, path):
        for m, regex, template, op in self.operations:
            if m == method and regex.match(path):
                return template, op
        return None, None

    def validate(self, schema, value):
        """The first validation error's message, or None."""
        key = json.dumps(schema, sort_keys=True)
        validator = self.validators.get(key)
        if validator is None:
            resolver = jsonschema.RefResolver("", self.root)
            validator = jsonschema.Draft4Validator(openapi_to_jsonschema(schema), resolver=resolver)
            self.validators[key] = validator
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        e = errors[0]
        return "%s at %s" % (e.message[:300], "/".join(str(p) for p in e.absolute_path) or "(root)")

    def check_query(self, op, query):
        declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        problems = []
        for name, raw in query:
            p = declared.get(name)
            if p is None:
                problems.append("query parameter '%s' is not declared by %s" % (name, op.get("operationId")))
                continue
            schema = p.get("schema", {})
            value = raw
            kind = schema.get("type")
            if kind == "boolean":
                if raw not in ("true", "false"):
                    problems.append("query parameter '%s' must be true or false, got '%s'" % (name, raw))
                    continue
                value = raw == "true"
            elif kind == "integer":
                try:
                    value = int(raw)
                except ValueError:
                    problems.append("query parameter '%s' must be an integer, got '%s'" % (name, raw))
                    continue
            if kind is not None or "$ref" in schema or "anyOf" in schema:
                err = self.validate(schema, value)
                if err:
                    problems.append("query parameter '%s': %s" % (name, err))
        return problems

    def request_schema(self, op):
        return op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")

    def response_schema(self, op, status):
        responses = op.get("responses", {})
        entry = responses.get(str(status)) or (responses.get("4XX") if 400 <= status < 500 else None) or responses.get("default")
        if entry is None:
            return None, "status %d is not a documented response of %s" % (status, op.get("operationId"))
        return entry.get("content", {}).get("application/json", {}).get("schema"), None


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


def normalised(vector):
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def id_key(point_id):
    """Qdrant orders and identifies points by id: integers, or UUIDs in canonical form."""
    if isinstance(point_id, int):
        return (0, point_id, "")
    return (1, 0, str(uuid.UUID(point_id)))


class Collection:
    def __init__(self, body):
        vectors = body.get("vectors")
        if not isinstance(vectors, dict) or "size" not in vectors:
            raise BadRequest("Wrong input: this stand-in supports one unnamed vector per point")
        self.size = vectors["size"]
        self.distance = vectors["distance"]
        if self.distance != "Cosine":
            raise BadRequest("Wrong input: this stand-in implements Cosine distance only")
        self.hnsw = dict(m=16, ef_construct=100, full_scan_threshold=10000)
        self.hnsw.update({k: v for k, v in (body.get("hnsw_config") or {}).items() if v is not None})
        self.hnsw.update({k: v for k, v in (vectors.get("hnsw_config") or {}).items() if v is not None})
        self.points = {}  # id_key -> (id, vector, payload)
        self.payload_schema = {}
        self.version = 0


def condition_matches(cond, point_id, payload):
    if "must" in cond or "should" in cond or "must_not" in cond:
        return filter_matches(cond, point_id, payload)
    if "has_id" in cond:
        return id_key(point_id) in {id_key(i) for i in cond["has_id"]}
    if "key" in cond:
        value = payload.get(cond["key"])
        match = cond.get("match")
        if match is None:
            raise BadRequest("Wrong input: this stand-in supports match conditions only")
        if "value" in match:
            return value == match["value"]
        if "any" in match:
            return value in match["any"]
        raise BadRequest("Wrong input: this stand-in supports match.value and match.any only")
    raise BadRequest("Wrong input: unsupported condition %s" % json.dumps(cond))


def as_list(x):
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


def filter_matches(flt, point_id, payload):
    if not flt:
        return True
    if not all(condition_matches(c, point_id, payload) for c in as_list(flt.get("must"))):
        return False
    if any(condition_matches(c, point_id, payload) for c in as_list(flt.get("must_not"))):
        return False
    should = as_list(flt.get("should"))
    return not should or any(condition_matches(c, point_id, payload) for c in should)


def select_payload(payload, with_payload):
    if with_payload is None or with_payload is True:
        return payload
    if with_payload is False:
        return None
    if isinstance(with_payload, list):
        return {k: v for k, v in payload.items() if k in with_payload}
    if isinstance(with_payload, dict) and "include" in with_payload:
        return {k: v for k, v in payload.items() if k in as_list(with_payload["include"])}
    raise BadRequest("Wrong input: unsupported with_payload")


class Store:
    def __init__(self, state=None):
        self.lock = threading.Lock()
        self.collections = {}
        self.state = state
        if state and os.path.exists(state):
            with open(state, "rb") as f:
                self.collections = pickle.load(f)

    def save(self):
        if self.state:
            with open(self.state + ".tmp", "wb") as f:
                pickle.dump(self.collections, f)
            os.replace(self.state + ".tmp", self.state)

    def get(self, name):
        c = self.collections.get(name)
        if c is None:
            raise NotFound("Not found: Collection `%s` doesn't exist!" % name)
        return c

    WRITES = ("PUT", "DELETE")

    def handle(self, method, template, params, query, body):
        with self.lock:
            result = self.apply(method, template, params, query, body)
            if method in self.WRITES or template.endswith("/points/delete"):
                self.save()
            return result

    def apply(self, method, template, params, query, body):
        name = params[0] if params else None
        if template == "/collections" and method == "GET":
            return {"collections": [{"name": n} for n in sorted(self.collections)]}
        if template == "/collections/{collection_name}" and method == "PUT":
            if name in self.collections:
                raise BadRequest("Wrong input: Collection `%s` already exists!" % name)
            self.collections[name] = Collection(body or {})
            return True
        if template == "/collections/{collection_name}" and method == "DELETE":
            return self.collections.pop(name, None) is not None
        if template == "/collections/{collection_name}/exists":
            return {"exists": name in self.collections}
        if template == "/readyz" or template == "/healthz":
            return None  # plain text answers
        c = self.get(name)
        if template == "/collections/{collection_name}" and method == "GET":
            return self.info(c)
        if template == "/collections/{collection_name}/index" and method == "PUT":
            field_schema = body.get("field_schema")
            kind = field_schema if isinstance(field_schema, str) else (field_schema or {}).get("type", "keyword")
            c.payload_schema[body["field_name"]] = {"data_type": kind, "params": field_schema if isinstance(field_schema, dict) else None, "points": 0}
            return self.updated(c)
        if template == "/collections/{collection_name}/points" and method == "PUT":
            for p in body["points"]:
                vector = p["vector"]
                if not isinstance(vector, list) or len(vector) != c.size:
                    raise BadRequest("Wrong input: Vector dimension error: expected dim: %d, got %d" %
                                     (c.size, len(vector) if isinstance(vector, list) else -1))
            for p in body["points"]:
                c.points[id_key(p["id"])] = (p["id"], normalised(p["vector"]), p.get("payload") or {})
            return self.updated(c)
        if template == "/collections/{collection_name}/points" and method == "POST":
            out = []
            for i in body["ids"]:
                found = c.points.get(id_key(i))
                if found:
                    out.append(self.record(found, body.get("with_payload"), body.get("with_vector")))
            return out
        if template == "/collections/{collection_name}/points/delete":
            if "points" in body:
                for i in body["points"]:
                    c.points.pop(id_key(i), None)
            else:
                for k in [k for k, (pid, _, payload) in c.points.items() if filter_matches(body["filter"], pid, payload)]:
                    del c.points[k]
            return self.updated(c)
        if template == "/collections/{collection_name}/points/count":
            return {"count": sum(1 for pid, _, payload in c.points.values() if filter_matches(body.get("filter"), pid, payload))}
        if template == "/collections/{collection_name}/points/scroll":
            limit = body.get("limit") or 10
            start = id_key(body["offset"]) if body.get("offset") is not None else None
            keys = sorted(k for k, (pid, _, payload) in c.points.items()
                          if (start is None or k >= start) and filter_matches(body.get("filter"), pid, payload))
            page = keys[:limit]
            nxt = c.points[keys[limit]][0] if len(keys) > limit else None
            return {"points": [self.record(c.points[k], body.get("with_payload"), body.get("with_vector")) for k in page],
                    "next_page_offset": nxt}
        if template == "/collections/{collection_name}/points/query":
            return self.query(c, body)
        if template == "/collections/{collection_name}/facet":
            counts = {}
            for pid, _, payload in c.points.values():
                if filter_matches(body.get("filter"), pid, payload) and body["key"] in payload:
                    v = payload[body["key"]]
                    counts[v] = counts.get(v, 0) + 1
            hits = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[: body.get("limit") or 10]
            return {"hits": [{"value": v, "count": n} for v, n in hits]}
        raise BadRequest("Wrong input: the stand-in does not implement %s %s" % (method, template))

    @staticmethod
    def updated(c):
        c.version += 1
        return {"operation_id": c.version, "status": "completed"}

    @staticmethod
    def record(found, with_payload, with_vector):
        pid, vector, payload = found
        out = {"id": pid}
        p = select_payload(payload, with_payload)
        if p is not None:
            out["payload"] = p
        if with_vector:
            out["vector"] = vector
        return out

    @staticmethod
    def query(c, body):
        q = body.get("query")
        if isinstance(q, dict) and "nearest" in q:
            q = q["nearest"]
        if not isinstance(q, list) or not all(isinstance(x, (int, float)) for x in q):
            raise BadRequest("Wrong input: this stand-in answers nearest-vector queries only")
        if len(q) != c.size:
            raise BadRequest("Wrong input: Vector dimension error: expected dim: %d, got %d" % (c.size, len(q)))
        qn = normalised(q)
        threshold = body.get("score_threshold")
        scored = []
        for pid, vector, payload in c.points.values():
            if not filter_matches(body.get("filter"), pid, payload):
                continue
            score = sum(a * b for a, b in zip(qn, vector))
            if threshold is None or score >= threshold:
                scored.append((score, pid, vector, payload))
        scored.sort(key=lambda s: (-s[0], id_key(s[1])))
        offset = body.get("offset") or 0
        limit = body.get("limit") or 10
        points = []
        for score, pid, vector, payload in scored[offset: offset + limit]:
            p = {"id": pid, "version": c.version, "score": score}
            sel = select_payload(payload, body.get("with_payload") if "with_payload" in body else False)
            if sel is not None:
                p["payload"] = sel
            if body.get("with_vector"):
                p["vector"] = vector
            points.append(p)
        return {"points": points}

    @staticmethod
    def info(c):
        return {
            "status": "green",
            "optimizer_status": "ok",
            "segments_count": 1,
            "points_count": len(c.points),
            "indexed_vectors_count": len(c.points),
            "payload_schema": c.payload_schema,
            "config": {
                "params": {"vectors": {"size": c.size, "distance": c.distance}, "shard_number": 1,
                           "replication_factor": 1, "write_consistency_factor": 1, "on_disk_payload": True},
                "hnsw_config": {"m": c.hnsw["m"], "ef_construct": c.hnsw["ef_construct"],
                                "full_scan_threshold": c.hnsw["full_scan_threshold"]},
                "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                                     "default_segment_number": 0, "flush_interval_sec": 5},
            },
        }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, contract, api_key, require_tenant_filter=False, state=None):
        super().__init__(address, Handler)
        self.require_tenant_filter = require_tenant_filter
        self.contract = contract
        self.api_key = api_key
        self.store = Store(state)
        self.violations = []
        self.faults = {"delay_ms": 0, "status": 0}
        self.meta_lock = threading.Lock()

    def violation(self, text):
        with self.meta_lock:
            self.violations.append(text)
        sys.stderr.write("qdrant-standin: CONTRACT VIOLATION: %s\n" % text)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body in one segment, sent at once: otherwise Nagle + delayed ACK add 40 ms a request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.dispatch("GET")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        server = self.server
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path.startswith("/__standin/"):
            return self.control(method, url.path, raw)
        faults = dict(server.faults)
        if faults["delay_ms"]:
            time.sleep(faults["delay_ms"] / 1000.0)
        if faults["status"]:
            return self.send(faults["status"], {"status": {"error": "stand-in fault injected"}, "time": 0})
        started = time.monotonic()
        template, op = server.contract.find(method, url.path)
        if op is None:
            server.violation("%s %s is not an operation of Qdrant's OpenAPI document" % (method, url.path))
            return self.send(404, {"status": {"error": "Not found: no such endpoint"}, "time": 0})
        where = "%s %s (%s)" % (method, url.path, op.get("operationId"))
        if server.api_key is not None and self.headers.get("api-key") != server.api_key:
            return self.send(401, {"status": {"error": "Must provide an API key or an Authorization bearer token"}, "time": 0})
        problems = server.contract.check_query(op, parse_qsl(url.query, keep_blank_values=True))
        body = None
        schema = server.contract.request_schema(op)
        if raw:
            if schema is None:
                problems.append("a body was sent but the operation takes none")
            elif "json" not in (self.headers.get("Content-Type") or ""):
                problems.append("the body's Content-Type is '%s', not application/json" % self.headers.get("Content-Type"))
            try:
                body = json.loads(raw)
            except ValueError as e:
                problems.append("the body is not JSON: %s" % e)
            else:
                if schema is not None:
                    err = server.contract.validate(schema, body)
                    if err:
                        problems.append("the body does not validate against the request schema: %s" % err)
        elif schema is not None and op.get("requestBody", {}).get("required"):
            problems.append("the operation requires a body")
        if problems:
            for p in problems:
                server.violation("%s: %s" % (where, p))
            return self.send(400, {"status": {"error": "Format error in JSON body: " + "; ".join(problems)}, "time": 0})
        if server.require_tenant_filter and template in TENANT_SCOPED and not has_tenant_filter(body):
            server.violation("%s: no tenant filter (a must match on tenantId)" % where)
        params = [unquote(x) for x in op_params(template, url.path)]
        try:
            result = server.store.handle(method, template, params, dict(parse_qsl(url.query)), body or {})
            status, answer = 200, {"result": result, "status": "ok", "time": time.monotonic() - started}
        except NotFound as e:
            status, answer = 404, {"status": {"error": str(e)}, "time": time.monotonic() - started}
        except BadRequest as e:
            status, answer = 400, {"status": {"error": str(e)}, "time": time.monotonic() - started}
        if template in ("/readyz", "/healthz"):
            return self.send(200, b"all shards are ready", "text/plain")
        rschema, problem = server.contract.response_schema(op, status)
        if problem:
            server.violation("stand-in response to %s: %s" % (where, problem))
        elif rschema is not None:
            err = server.contract.validate(rschema, answer)
            if err:
                server.violation("stand-in response to %s does not validate: %s" % (where, err))
        self.send(status, answer)

    def control(self, method, path, raw):
        server = self.server
        if path == "/__standin/violations" and method == "GET":
            with server.meta_lock:
                return self.send(200, {"violations": list(server.violations)})
        if path == "/__standin/violations/clear" and method == "POST":
            with server.meta_lock:
                server.violations.clear()
            return self.send(200, {"ok": True})
        if path == "/__standin/faults" and method == "POST":
            faults = json.loads(raw or b"{}")
            server.faults = {"delay_ms": int(faults.get("delay_ms", 0)), "status": int(faults.get("status", 0))}
            return self.send(200, server.faults)
        return self.send(404, {"error": "unknown control endpoint"})


TENANT_SCOPED = {
    "/collections/{collection_name}/points/query",
    "/collections/{collection_name}/points/scroll",
    "/collections/{collection_name}/points/count",
    "/collections/{collection_name}/points/delete",
}


def has_tenant_filter(body):
    flt = (body or {}).get("filter") or {}
    return any(isinstance(c, dict) and c.get("key") == "tenantId" and "value" in (c.get("match") or {})
               for c in as_list(flt.get("must")))


def op_params(template, path):
    pattern = "^" + re.sub(r"\\\{[a-z_]+\\\}", "([^/]+)", re.escape(template)) + "$"
    return re.match(pattern, path).groups()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--require-tenant-filter", action="store_true")
    ap.add_argument("--state", default=None)
    args = ap.parse_args()
    server = Server((args.host, args.port), Contract(args.spec), args.api_key, args.require_tenant_filter, args.state)
    print("listening on %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
