#!/usr/bin/env bash
# Runs Kawa (`kawa serve`) from this checkout, installing FFmpeg first when missing.
# Extra arguments go to `kawa serve`, e.g. scripts/run.sh --config kawa.toml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run
exec cargo run --release --bin kawa -- serve "$@"
