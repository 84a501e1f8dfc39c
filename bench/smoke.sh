#!/usr/bin/env bash
# ctest bench.smoke: every benchmark runs end to end on a tiny workload and exits 0 (a benchmark
# exits non-zero when a request fails or an image does not complete). Figures are not checked
# here; performance is measured by scripts/bench.
set -euo pipefail
b=$1
"$b/pipeline_throughput" --model noop --bus both --images 30 --latency-samples 3 --raw
"$b/upload_ack" --model builtin --concurrency 1,4 --seconds 1 --fill-seconds 1
"$b/search_http" --n 1000 --queries 50 --seconds 1
"$b/vector_recall" --n 3000 --queries 20 --tail 100 --ef-search 32
