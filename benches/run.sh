#!/usr/bin/env bash
# Installs the benchmark tools (nginx, wrk) with apt and runs the benches.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light wrk
fi
cargo bench --bench http_server "$@"
cargo bench --bench index_path "$@"
cargo bench --bench file_path "$@"
