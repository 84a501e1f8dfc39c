#!/usr/bin/python3
"""Validate DeepLens pipeline events against the JSON Schemas in schemas/.

Usage:
    /usr/bin/python3 validate_events.py --schemas DIR [--expect-invalid] [FILE ...]
    /usr/bin/python3 validate_events.py --schemas DIR --check-asyncapi DIR/asyncapi.yaml [FILE ...]

Events are read from the FILEs given, or as JSON Lines from stdin when no FILE
is given or FILE is "-". Each file may hold a single JSON object (pretty-printed
or not) or JSON Lines (one object per line). Bare NaN/Infinity tokens are
rejected: they are not JSON.

For every event the schema is chosen by its eventType
(DIR/<eventType>.schema.json) and the event is validated with
Draft202012Validator plus a date-time format checker. Output, one line per
event (or per error):
    ok <eventType> <eventId>
    FAIL <eventType>: <path>: <message>
followed by a final line "N passed, M failed".

Exit status: 0 if every event passed (with --expect-invalid: if every event
FAILED) and at least one event was read; 1 otherwise (including
"no events to validate"); 2 on usage errors or broken schemas.

--check-asyncapi FILE additionally checks that every channel's message payload
$ref in the AsyncAPI document resolves to an existing schema file, and that
every DIR/*.schema.json is referenced by some channel. If --check-asyncapi is
given without FILEs, stdin is not read and only the AsyncAPI check runs.

Needs only python3-jsonschema (tested with Debian bookworm's 4.10.3, which has
no `referencing` module: every schema is self-contained, using local $defs)
and python3-yaml (for --check-asyncapi).
"""

import argparse
import datetime
import glob
import json
import os
import re
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

try:
    import jsonschema
    from jsonschema import Draft202012Validator, FormatChecker
except ImportError:  # pragma: no cover
    sys.stderr.write("validate_events.py: needs python3-jsonschema (run with /usr/bin/python3)\n")
    sys.exit(2)

SCHEMA_SUFFIX = ".schema.json"

# --------------------------------------------------------------------------
# date-time format checking.
# jsonschema only checks "date-time" when the optional rfc3339-validator
# package is installed (it is not on Debian bookworm by default), so register
# our own RFC 3339 checker instead of silently skipping the format.
# --------------------------------------------------------------------------
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"([Zz]|[+-](\d{2}):(\d{2}))$"
)

FORMAT_CHECKER = FormatChecker()


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_datetime(value):
    if not isinstance(value, str):
        return True  # formats only constrain strings
    m = _RFC3339.match(value)
    if not m:
        raise ValueError("not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    datetime.date(year, month, day)  # raises ValueError on e.g. 2025-02-30
    if hour > 23 or minute > 59 or second > 60:  # 60: leap second
        raise ValueError("time out of range")
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        raise ValueError("UTC offset out of range")
    return True


# --------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------
def load_schemas(schema_dir):
    """Return {eventType: validator}; exits 2 if a schema is broken."""
    paths = sorted(glob.glob(os.path.join(schema_dir, "*" + SCHEMA_SUFFIX)))
    if not paths:
        sys.stderr.write(f"validate_events.py: no *{SCHEMA_SUFFIX} files in {schema_dir}\n")
        sys.exit(2)
    validators = {}
    broken = False
    for path in paths:
        name = os.path.basename(path)[: -len(SCHEMA_SUFFIX)]
        try:
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
            Draft202012Validator.check_schema(schema)
        except (OSError, ValueError) as e:
            print(f"SCHEMA {name}: {path}: {e}")
            broken = True
            continue
        except jsonschema.exceptions.SchemaError as e:
            print(f"SCHEMA {name}: {fmt_path(e.absolute_path)}: {e.message}")
            broken = True
            continue
        if name == "common":
            continue  # shared definitions, not an event type
        validators[name] = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    if broken:
        sys.exit(2)
    return validators


def fmt_path(path):
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


# --------------------------------------------------------------------------
# Reading events
# --------------------------------------------------------------------------
def _reject_constant(token):
    raise ValueError(f"invalid JSON token {token}")


def _loads(text):
    return json.loads(text, parse_constant=_reject_constant)


def read_events(name, text):
    """Yield (source, event_or_None, parse_error_or_None)."""
    if not text.strip():
        return
    try:
        event = _loads(text)
    except ValueError as e:
        whole_error = e  # "as" names are unbound after the except block
    else:
        yield name, event, None
        return
    lines = text.splitlines()
    results = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            results.append((f"{name}:{lineno}", _loads(line), None))
        except ValueError as e:
            if not results:
                # First line is not a JSON value on its own: this is one
                # (broken) pretty-printed document, not JSON Lines.
                yield name, None, str(whole_error)
                return
            results.append((f"{name}:{lineno}", None, str(e)))
    yield from results


def iter_inputs(files):
    for f in files:
        if f == "-":
            yield from read_events("<stdin>", sys.stdin.read())
            continue
        try:
            with open(f, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            yield f, None, f"cannot read: {e}"
            continue
        yield from read_events(f, text)


# --------------------------------------------------------------------------
# Validating
# --------------------------------------------------------------------------
def validate_event(validators, event):
    """Return (eventType, eventId, [(path, message), ...])."""
    if not isinstance(event, dict):
        return "?", "?", [("$", f"event is not a JSON object ({type(event).__name__})")]
    etype = event.get("eventType")
    eid = event.get("eventId", "?")
    if not isinstance(etype, str):
        return "?", eid, [("$.eventType", "missing or not a string")]
    validator = validators.get(etype)
    if validator is None:
        return etype, eid, [("$.eventType", f"unknown event type {etype!r}")]
    errors = sorted(validator.iter_errors(event),
                    key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return etype, eid, [(fmt_path(e.absolute_path), e.message) for e in errors]


# --------------------------------------------------------------------------
# AsyncAPI cross-check
# --------------------------------------------------------------------------
def _resolve_local(doc, ref):
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def check_asyncapi(path, schema_dir):
    """Return a list of problems (empty when consistent)."""
    try:
        import yaml
    except ImportError:
        return ["python3-yaml is not installed (run with /usr/bin/python3)"]
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        return [f"{path}: {e}"]
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("channels"), dict) or not doc["channels"]:
        return [f"{path}: no channels"]
    if not str(doc.get("asyncapi", "")).startswith("3."):
        problems.append(f"{path}: asyncapi version {doc.get('asyncapi')!r} is not 3.x")
    base = os.path.dirname(os.path.abspath(path))
    referenced = set()

    def deref(node, where):
        seen = 0
        while isinstance(node, dict) and "$ref" in node and str(node["$ref"]).startswith("#/"):
            try:
                node = _resolve_local(doc, node["$ref"])
            except (KeyError, TypeError):
                problems.append(f"{where}: unresolvable $ref {node['$ref']}")
                return None
            seen += 1
            if seen > 20:
                problems.append(f"{where}: $ref loop")
                return None
        return node

    # Every operation sends or receives on a channel of the document, with messages of that channel;
    # every channel has both (a producer and a consumer).
    actions = {}
    for oname, op in (doc.get("operations") or {}).items():
        where = f"operation {oname}"
        ref = (op.get("channel") or {}).get("$ref", "") if isinstance(op, dict) else ""
        if not ref.startswith("#/channels/") or ref[len("#/channels/"):] not in doc["channels"]:
            problems.append(f"{where}: channel $ref {ref!r} is not a channel of the document")
            continue
        cname = ref[len("#/channels/"):]
        actions.setdefault(cname, set()).add(op.get("action"))
        for m in op.get("messages") or []:
            mref = m.get("$ref", "") if isinstance(m, dict) else ""
            if not mref.startswith(ref + "/messages/"):
                problems.append(f"{where}: message $ref {mref!r} is not a message of {cname}")
            elif deref(m, where) is None:
                problems.append(f"{where}: message $ref {mref!r} does not resolve")
    for cname, channel in doc["channels"].items():
        if actions.get(cname) != {"send", "receive"}:
            problems.append(f"channel {cname}: needs a send and a receive operation, has {sorted(actions.get(cname, []))}")
        messages = channel.get("messages") if isinstance(channel, dict) else None
        if not isinstance(messages, dict) or not messages:
            problems.append(f"channel {cname}: no messages")
            continue
        for mname, msg in messages.items():
            where = f"channel {cname} message {mname}"
            m = deref(msg, where)
            payload = m.get("payload") if isinstance(m, dict) else None
            ref = payload.get("$ref") if isinstance(payload, dict) else None
            if not isinstance(ref, str) or ref.startswith("#"):
                problems.append(f"{where}: payload is not a $ref to a schema file")
                continue
            target = os.path.normpath(os.path.join(base, ref.split("#", 1)[0]))
            if not os.path.isfile(target):
                problems.append(f"{where}: payload $ref {ref} -> missing file {target}")
                continue
            try:
                with open(target, encoding="utf-8") as f:
                    json.load(f)
            except (OSError, ValueError) as e:
                problems.append(f"{where}: payload $ref {ref}: {e}")
                continue
            referenced.add(target)
    for sp in sorted(glob.glob(os.path.join(schema_dir, "*" + SCHEMA_SUFFIX))):
        sp = os.path.normpath(os.path.abspath(sp))
        if os.path.basename(sp) == "common" + SCHEMA_SUFFIX:
            continue
        if sp not in referenced:
            problems.append(f"schema {os.path.basename(sp)} is not referenced by any channel")
    return problems


# --------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemas", required=True, metavar="DIR", help="directory holding <eventType>.schema.json")
    ap.add_argument("--expect-invalid", action="store_true",
                    help="invert the outcome: succeed only if every event FAILS")
    ap.add_argument("--check-asyncapi", metavar="FILE", help="cross-check an AsyncAPI document against DIR")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the source file:line of each event")
    ap.add_argument("files", nargs="*", metavar="FILE", help='event files; "-" or none = JSON Lines on stdin')
    args = ap.parse_args(argv)

    if not os.path.isdir(args.schemas):
        ap.error(f"--schemas {args.schemas}: not a directory")
    validators = load_schemas(args.schemas)

    status = 0
    if args.check_asyncapi:
        problems = check_asyncapi(args.check_asyncapi, args.schemas)
        for p in problems:
            print(f"FAIL asyncapi: {p}")
        if problems:
            status = 1
        else:
            print(f"ok asyncapi {args.check_asyncapi}")
        if not args.files:
            return status

    files = args.files or ["-"]
    passed = failed = 0
    unexpected = []
    for source, event, parse_error in iter_inputs(files):
        if args.verbose:
            print(f"# {source}")
        if parse_error is not None:
            print(f"FAIL ?: {source}: invalid JSON: {parse_error}")
            failed += 1
            continue
        etype, eid, errors = validate_event(validators, event)
        if errors:
            for p, msg in errors:
                print(f"FAIL {etype}: {p}: {msg}")
            failed += 1
        else:
            print(f"ok {etype} {eid}")
            passed += 1
            unexpected.append(source)

    total = passed + failed
    if total == 0:
        print("no events to validate")
        print("0 passed, 0 failed")
        return 1
    if args.expect_invalid:
        for source in unexpected:
            print(f"UNEXPECTEDLY VALID {source}")
    print(f"{passed} passed, {failed} failed")
    if args.expect_invalid:
        ok = passed == 0
    else:
        ok = failed == 0
    return status if ok else 1


if __name__ == "__main__":
    sys.exit(main())
