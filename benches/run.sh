#!/usr/bin/env bash
# Installs the benchmark tools (nginx, wrk) with apt and runs the benches.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light wrk
fi
# BENCH_SECONDS (5), BENCH_ROUNDS (3, medians), BENCH_PIN=1 (servers on CPU 0, wrk on CPU 1);
# hot_path also takes BENCH_ONLY="page 256,wheel 16" (only those points) and ROXPI_* (passed to roxpi).
cargo bench --bench hot_path "$@"
cargo bench --bench http_server "$@"
cargo bench --bench index_path "$@"
cargo bench --bench file_path "$@"
# Needs s3s-fs 0.14.1 (cargo install s3s-fs --version 0.14.1 --features binary --locked).
cargo bench --bench storage_tiers "$@"
