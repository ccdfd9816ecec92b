#!/usr/bin/env bash
# Installs the system packages Kawa needs, when missing, on Debian/Ubuntu.
#   scripts/deps.sh run    what `kawa serve` needs (FFmpeg)
#   scripts/deps.sh test   what the test suite needs as well (Redis, players, ...)
set -euo pipefail

want=(ffmpeg:ffmpeg ffprobe:ffmpeg)
if [ "${1:-run}" = test ]; then
  want+=(redis-server:redis-server prometheus:prometheus promtool:prometheus)
  # Real players for tests/players.rs: a headless browser (hls.js runs in it, driven
  # from Node.js) and GStreamer with its HLS demuxer and H.264/AAC decoders.
  want+=(chromium:chromium gst-launch-1.0:gstreamer1.0-tools node:nodejs npm:npm)
  # tests/tls.rs: a certificate made by openssl, and curl as an HTTP/2 client.
  want+=(openssl:openssl curl:curl)
fi

missing=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# Packages that bring plugins, not a command of their own.
if [ "${1:-run}" = test ]; then
  # plugins-ugly: x264enc, a real encoder with GStreamer's defaults (tests/encoders.rs).
  for pkg in gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  # Deduplicate, keep order.
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The tests' S3-compatible server (moto) comes from PyPI.
if [ "${1:-run}" = test ] && ! python3 -c 'import moto.server, flask' >/dev/null 2>&1; then
  echo "installing: moto[server] (pip)" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >/dev/null
  fi
  # A Debian system Python refuses installs outside a venv (PEP 668) unless told.
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'moto[server]'
fi

# Enhanced RTMP publishers (HEVC, AV1) in tests/players.rs need FFmpeg 6.1 or later with
# libx265 and SVT-AV1; Debian 12 has 5.1. The imageio-ffmpeg wheel ships a static FFmpeg.
if [ "${1:-run}" = test ] && ! python3 -c 'import imageio_ffmpeg' >/dev/null 2>&1; then
  echo "installing: imageio-ffmpeg (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check imageio-ffmpeg 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages imageio-ffmpeg
fi

# tests/deploy.rs checks deploy/k8s against the Kubernetes API schemas, offline.
if [ "${1:-run}" = test ] && ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing: kubernetes-validate (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages kubernetes-validate
fi

# The browser player's scripts (playwright-core drives Debian's chromium; hls.js plays).
player="$(dirname "$0")/../tests/player"
if [ "${1:-run}" = test ] && [ ! -d "$player/node_modules" ]; then
  echo "installing: tests/player (npm ci)" >&2
  (cd "$player" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: Rust (cargo) is required: https://rustup.rs" >&2
  exit 1
fi
