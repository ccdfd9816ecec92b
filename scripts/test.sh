#!/usr/bin/env bash
# Runs the whole test suite, installing what the tests start (redis-server, ffmpeg, ...)
# first when missing. Every service a test needs is started by the test itself on a free
# loopback port and stopped after it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --no-fail-fast "$@"
else
  cargo test --all-targets --no-fail-fast "$@"
fi
