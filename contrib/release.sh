#!/usr/bin/env bash
# Static release binaries for Linux, x86_64 and aarch64 (musl: no loader,
# no libc needed on the host), stripped (the release profile strips
# symbols). Installs what it needs:
# - x86_64: Debian's musl-tools (musl-gcc, for ring's C and assembly);
# - aarch64: cargo-zigbuild from crates.io with Zig from the `ziglang`
#   package on PyPI (in a venv under target/release-tools).
# Output: target/<triple>/release/roxpi, and target/dist/linux-<arch>/roxpi
# with target/dist/ca-certificates.crt for contrib/Dockerfile. Prints the
# sizes and fails if a binary is larger than 8 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BYTES=$((8 * 1024 * 1024))
ZIGLANG_VERSION="0.15.2"
ZIGBUILD_VERSION="0.24.1"

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

apt_install musl-tools ca-certificates
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl >/dev/null

tools="target/release-tools"
if ! "$tools/zig/bin/python" -m ziglang version 2>/dev/null | grep -q "^${ZIGLANG_VERSION}"; then
  rm -rf "$tools/zig"
  python3 -m venv "$tools/zig"
  "$tools/zig/bin/python" -m pip install --quiet --disable-pip-version-check "ziglang==${ZIGLANG_VERSION}"
fi
# cargo-zigbuild finds Zig as `python3 -m ziglang` when `zig` is not on PATH.
export PATH="$PWD/$tools/zig/bin:$HOME/.cargo/bin:$PATH"
if ! cargo zigbuild --version 2>/dev/null | grep -q "${ZIGBUILD_VERSION}"; then
  cargo install --quiet --locked cargo-zigbuild --version "${ZIGBUILD_VERSION}"
fi

CC_x86_64_unknown_linux_musl=musl-gcc \
  cargo build --release --locked --target x86_64-unknown-linux-musl
cargo zigbuild --release --locked --target aarch64-unknown-linux-musl

mkdir -p target/dist/linux-amd64 target/dist/linux-arm64
cp target/x86_64-unknown-linux-musl/release/roxpi target/dist/linux-amd64/roxpi
cp target/aarch64-unknown-linux-musl/release/roxpi target/dist/linux-arm64/roxpi
cp /etc/ssl/certs/ca-certificates.crt target/dist/ca-certificates.crt

status=0
for triple in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  bin="target/$triple/release/roxpi"
  size=$(stat -c %s "$bin")
  printf '%-28s %9d bytes (%s MB)\n' "$triple" "$size" "$(awk "BEGIN { printf \"%.2f\", $size / 1048576 }")"
  if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "  larger than 8 MB" >&2
    status=1
  fi
done
exit $status
