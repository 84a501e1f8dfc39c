#!/usr/bin/python3
"""Check schemas/openapi.yaml against the HTTP routes the deeplens binary serves.

Usage:
    /usr/bin/python3 tests/e2e/check_openapi_routes.py --deeplens PATH_TO_BINARY --openapi schemas/openapi.yaml

Runs `PATH_TO_BINARY routes`, which prints the server's route table (the same kRouteSpecs the
server dispatches on), one "METHOD /pattern/{param}" per line, and loads the OpenAPI document.
Paths are compared with their template parameters' names ignored (`{id}` == `{imageId}`).

Fails (one "FAIL ..." line each) when:
  * the server has a route (method + path) that the document lacks;
  * the document has an operation the server lacks;
  * an operation has no operationId, or one another operation also has;
  * an operation has no 2xx response (101 Switching Protocols counts for a WebSocket upgrade);
  * an operation under /api/v1 does not declare security (its own `security`, or the document's
    top-level one when it has none, must hold at least one non-empty requirement), or names a
    security scheme missing from components.securitySchemes;
  * a path template parameter is not declared as an `in: path`, `required: true` parameter;
  * a local `$ref` ("#/...") does not resolve.
Prints "ok METHOD /path" for each server route found in the document, then a final line
"N passed, M failed" (N = server routes matched, M = problems found).

Exit status: 0 when nothing failed and at least one route matched; 1 otherwise; 2 on usage
errors (the binary cannot be run, the document cannot be read).

Needs only python3-yaml (run with Debian's /usr/bin/python3).
"""

import argparse
import re
import subprocess
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.stderr.write("check_openapi_routes.py: needs python3-yaml (run with /usr/bin/python3)\n")
    sys.exit(2)

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TEMPLATE = re.compile(r"\{([^}/]*)\}")


def normalise(path):
    """The path with every template parameter's name dropped: /a/{id}/b -> /a/{}/b."""
    return TEMPLATE.sub("{}", path)


def server_routes(binary):
    try:
        proc = subprocess.run([binary, "routes"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        sys.stderr.write(f"check_openapi_routes.py: cannot run '{binary} routes': {e}\n")
        sys.exit(2)
    if proc.returncode != 0:
        sys.stderr.write(f"check_openapi_routes.py: '{binary} routes' exited with {proc.returncode}:\n{proc.stderr}")
        sys.exit(2)
    routes = []
    for n, line in enumerate(proc.stdout.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("/") or parts[0].lower() not in HTTP_METHODS:
            sys.stderr.write(f"check_openapi_routes.py: '{binary} routes' line {n} is not 'METHOD /path': {line!r}\n")
            sys.exit(2)
        routes.append((parts[0].upper(), parts[1]))
    if not routes:
        sys.stderr.write(f"check_openapi_routes.py: '{binary} routes' printed no routes\n")
        sys.exit(2)
    return routes


def load_document(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        sys.stderr.write(f"check_openapi_routes.py: cannot read {path}: {e}\n")
        sys.exit(2)
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        sys.stderr.write(f"check_openapi_routes.py: {path} is not an OpenAPI document with 'paths'\n")
        sys.exit(2)
    return doc


def resolve_pointer(doc, ref):
    """The node a local "#/a/b" reference names, or None."""
    node = doc
    for token in ref[2:].split("/") if ref != "#" else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def deref(doc, node):
    seen = set()
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#"):
        ref = node["$ref"]
        if ref in seen:
            return None
        seen.add(ref)
        node = resolve_pointer(doc, ref)
    return node


def dangling_refs(doc):
    out = []

    def walk(node, where):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#") and resolve_pointer(doc, ref) is None:
                out.append((where, ref))
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")

    walk(doc, "#")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deeplens", required=True, help="the deeplens binary")
    ap.add_argument("--openapi", required=True, help="the OpenAPI document (YAML)")
    args = ap.parse_args()

    routes = server_routes(args.deeplens)
    doc = load_document(args.openapi)
    failures = []

    # Document operations, keyed by (METHOD, normalised path).
    operations = {}
    for path, item in doc["paths"].items():
        if not isinstance(item, dict):
            failures.append(f"path {path}: not a Path Item object")
            continue
        for method in HTTP_METHODS:
            if method in item:
                operations[(method.upper(), normalise(path))] = (path, method, item, item[method])

    passed = 0
    served = set()
    for method, pattern in routes:
        key = (method, normalise(pattern))
        served.add(key)
        if key in operations:
            passed += 1
            print(f"ok {method} {pattern}")
        else:
            failures.append(f"{method} {pattern}: served by deeplens but missing from {args.openapi}")

    schemes = (doc.get("components") or {}).get("securitySchemes") or {}
    top_security = doc.get("security")
    operation_ids = {}
    for key in sorted(operations):
        path, method, item, op = operations[key]
        name = f"{method.upper()} {path}"
        if key not in served:
            failures.append(f"{name}: documented but deeplens has no such route")
        if not isinstance(op, dict):
            failures.append(f"{name}: not an Operation object")
            continue

        op_id = op.get("operationId")
        if not isinstance(op_id, str) or not op_id.strip():
            failures.append(f"{name}: no operationId")
        elif op_id in operation_ids:
            failures.append(f"{name}: operationId '{op_id}' is also used by {operation_ids[op_id]}")
        else:
            operation_ids[op_id] = name

        responses = op.get("responses") if isinstance(op.get("responses"), dict) else {}
        if not any(re.fullmatch(r"2(\d\d|XX)|101", str(code)) for code in responses):
            failures.append(f"{name}: no 2xx response (has: {', '.join(map(str, responses)) or 'none'})")

        security = op.get("security", top_security)
        if path == "/api/v1" or path.startswith("/api/v1/"):
            if not isinstance(security, list) or not any(isinstance(r, dict) and r for r in security):
                failures.append(f"{name}: declares no security (needs bearer or API-key authentication)")
        for requirement in security if isinstance(security, list) else []:
            for scheme in requirement if isinstance(requirement, dict) else {}:
                if scheme not in schemes:
                    failures.append(f"{name}: security scheme '{scheme}' is not in components.securitySchemes")

        declared = set()
        for p in list(item.get("parameters") or []) + list(op.get("parameters") or []):
            p = deref(doc, p)
            if isinstance(p, dict) and p.get("in") == "path" and p.get("required") is True:
                declared.add(p.get("name"))
        for param in TEMPLATE.findall(path):
            if param not in declared:
                failures.append(f"{name}: path parameter '{param}' is not declared (in: path, required: true)")

    for where, ref in dangling_refs(doc):
        failures.append(f"$ref '{ref}' at {where} does not resolve")

    for f in failures:
        print(f"FAIL {f}")
    print(f"{passed} passed, {len(failures)} failed")
    return 0 if passed > 0 and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
