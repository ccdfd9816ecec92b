#!/usr/bin/env bash
# Refreshes the hls.js that Kawa's player page (`/watch/{path}`) serves from the binary:
# hls.js's "light" build (H.264/AAC HLS and LL-HLS, no subtitles, DRM or alternate audio),
# from the npm registry, with its license. Kawa never loads it from a CDN.
#   scripts/vendor-hlsjs.sh [VERSION]   (default: the version tests/player uses)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-$(sed -n 's/.*"hls.js": "\([^"]*\)".*/\1/p' tests/player/package.json)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "hls.js@$version" >/dev/null && tar xzf hls.js-*.tgz)
dest=src/http/watch
# No source map is served: drop the comment that would point the browser at one.
grep -v '^//# sourceMappingURL=' "$work/package/dist/hls.light.min.js" > "$dest/hls.light.min.js"
cp "$work/package/LICENSE" "$dest/hls.js-LICENSE"
echo "$version" > "$dest/hls.js-VERSION"
echo "vendored hls.js $version (light) into $dest" >&2
