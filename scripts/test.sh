#!/usr/bin/env bash
# Runs the whole test suite, installing what the tests start (redis-server, ffmpeg, ...)
# first when missing. Every service a test needs is started by the test itself on a free
# loopback port and stopped after it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
# Unit and integration tests, with the crash tests' fault-injection hook built in; the benchmarks (benches/) print figures and are run with
# `cargo bench`, not here.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --features fault-injection --lib --bins --tests --no-fail-fast "$@"
else
  cargo test --features fault-injection --lib --bins --tests --no-fail-fast "$@"
fi
