#!/usr/bin/env bash
# usage: check_schemas.sh PYTHON EMIT_SAMPLES DEEPLENS SOURCE_DIR
set -euo pipefail
py=$1 emit=$2 deeplens=$3 src=$4
validate=("$py" "$src/tests/integration/events/validate_events.py" --schemas "$src/schemas")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== encoder output, every event type with all and with no optional fields"
"$emit" > "$work/samples.jsonl"
test "$(wc -l < "$work/samples.jsonl")" -eq 10
"${validate[@]}" --check-asyncapi "$src/schemas/asyncapi.yaml" "$work/samples.jsonl"

echo "== spec examples normalised by 'deeplens events check'"
for f in "$src"/tests/data/events/*.json; do
  case "$f" in *forward_compat.json) ;; *) "$deeplens" events check "$f" >> "$work/normalised.jsonl" ;; esac
done
# forward-compatible input is accepted and its normalised output loses the unknown fields.
"$deeplens" events check "$src/tests/data/events/forward_compat.json" >> "$work/normalised.jsonl"
"${validate[@]}" "$work/normalised.jsonl"

echo "== a field renamed in code only is caught by the schemas"
sed 's/"fileSize"/"fileBytes"/; s/"featureVector"/"features"/; s/"totalProcessingTime"/"totalTime"/; s/"retryable"/"canRetry"/; s/"imagePath"/"path"/' \
  "$work/samples.jsonl" | grep -E 'fileBytes|features|totalTime|canRetry|"path"' > "$work/renamed.jsonl"
test "$(wc -l < "$work/renamed.jsonl")" -eq 10
"${validate[@]}" --expect-invalid "$work/renamed.jsonl"

echo "== invalid fixtures are rejected by 'deeplens events check' with exit 1"
for f in "$src"/tests/data/events/invalid/*.json; do
  if "$deeplens" events check "$f" > /dev/null 2> "$work/err"; then
    echo "FAIL: accepted $f"; exit 1
  fi
  echo "rejected $(basename "$f"): $(cat "$work/err")"
done
echo "schema checks passed"
