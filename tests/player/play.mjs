// Plays an HLS stream with a real hls.js in Debian's headless Chromium, as a web page
// viewer would, and prints what happened as one JSON line.
//
//   node play.mjs URL SECONDS [LEVEL]
//   PLAY_LOW_LATENCY=0 node play.mjs ...   hls.js with lowLatencyMode off (default on,
//                                          as hls.js ships)
//
// URL: a master or media playlist. SECONDS: how long to play (wall clock) from the
// first `playing` event, which must come within START_SECONDS of loading the URL.
// LEVEL: a variant's index in the master, in the master's order, to pin (ABR off), so
// that rendition is played and no other. (hls.js sorts its levels by bandwidth, so the
// variant is found among them by its URL.)
//
// The JSON line: {played_seconds, stalls, errors, level_heights, ...}:
//   played_seconds  how far video.currentTime advanced in the SECONDS after the first
//                   `playing` event
//   start_seconds   from loading the URL to that first `playing` event
//   stalls          `waiting` events after that first `playing`
//   errors          hls.js fatal errors ({type, details, ...}); non-fatal ones are in
//                   `warnings`
//   level_heights   the heights of the master's variants, as hls.js parsed them (in
//                   hls.js's order)
//   pinned          the hls.js level index the variant was pinned to (or -1)
//   played_levels   the hls.js level indices whose fragments were played (FRAG_CHANGED)
//   played_urls     their playlist URLs
//   decoded_frames  the browser's count of decoded video frames (getVideoPlaybackQuality)
//   video_size      the decoded picture's width x height at the end
//   latency         behind live while playing, sampled every 250 ms: `hlsjs` is hls.js's
//                   own `latency` (from the playlist's live edge), `pdt` is the wall
//                   clock minus the PROGRAM-DATE-TIME of the frame on screen (what a
//                   viewer sees against the streamer: Kawa's PDT is ingest time); each
//                   {median, p95, max, samples}
//   audio_decoded_bytes, video_decoded_bytes
//                   Chromium's counts of the bytes its audio and video decoders took in
// Exits 1 when hls.js reported a fatal error or the page could not play at all, 2 on
// bad arguments.
//
// The page is served by this script at a loopback origin other than the stream's (no
// server: Playwright answers the request), so the playlist and segment requests are
// cross-origin, as they are for a player embedded in someone's site: Kawa's CORS headers
// are part of what is tested.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const [url, secondsArg, levelArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
// LEVEL: the variant's index in the master, or its URI as the master writes it (the
// master orders variants by measured bandwidth, which can change while tests run).
const byUri = levelArg !== undefined && !/^-?\d+$/.test(levelArg);
let level = levelArg === undefined ? -1 : byUri ? 0 : Number(levelArg);
const START_SECONDS = 20;
const lowLatency = process.env.PLAY_LOW_LATENCY !== '0';
if (!url || !(seconds > 0) || !Number.isInteger(level)) {
  console.error('usage: node play.mjs URL SECONDS [LEVEL|VARIANT-URI]');
  process.exit(2);
}

// Another origin than Kawa's. Port 65535 is never Kawa's in the tests (the OS gives
// ports from the ephemeral range below it) and is not one Chrome refuses; nothing
// listens there: the page never leaves this script.
const PAGE = 'http://localhost:65535/player.html';
const HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>kawa player</title></head>
<body><video id="v" muted playsinline autoplay width="320" height="240"></video></body></html>`;

// The pinned variant's absolute URL, from the master's text.
let variantUrl = null;
if (level >= 0) {
  const text = await (await fetch(url)).text();
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const uris = lines.filter((l, i) => i > 0 && lines[i - 1].startsWith('#EXT-X-STREAM-INF:'));
  if (byUri) {
    level = uris.indexOf(levelArg);
    if (level < 0) {
      console.log(JSON.stringify({ url, level, errors: [{ type: 'test', details: `no variant ${levelArg} in the master` }] }));
      process.exit(1);
    }
  }
  if (level >= uris.length) {
    console.log(JSON.stringify({ url, level, errors: [{ type: 'test', details: `no variant ${level} in ${uris.length}` }] }));
    process.exit(1);
  }
  variantUrl = new URL(uris[level], url).href;
}

const userDataDir = mkdtempSync(join(tmpdir(), 'kawa-chromium-'));
let browser;
let exitCode = 1;
try {
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    // The page is served at a made-up origin and Kawa listens on loopback: Chrome asks
    // the viewer before such a page may read loopback addresses (Local Network Access).
    // In production both are public and nobody is asked; here the test says yes.
    permissions: ['local-network-access'],
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Muted autoplay is allowed anyway; this keeps a policy change from mattering.
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  const console_ = [];
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
  await page.route(PAGE, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html', body: HTML }),
  );
  await page.goto(PAGE);
  await page.addScriptTag({ path: join(here, 'node_modules/hls.js/dist/hls.min.js') });

  const result = await page.evaluate(
    async ({ url, seconds, level, variantUrl, startSeconds, lowLatency }) => {
      const video = document.getElementById('v');
      const out = {
        url,
        level,
        variant_url: variantUrl,
        pinned: -1,
        hls_version: Hls.version,
        mse_h264_aac: MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E,mp4a.40.2"'),
        // Whether this browser's MSE takes HEVC (Main) and AV1 (Main 8-bit).
        mse_hevc: MediaSource.isTypeSupported('video/mp4; codecs="hvc1.1.6.L90.B0"'),
        mse_av1: MediaSource.isTypeSupported('video/mp4; codecs="av01.0.04M.08"'),
        played_seconds: 0,
        start_seconds: null,
        stalls: 0,
        errors: [],
        warnings: [],
        level_heights: [],
        played_levels: [],
        decoded_frames: 0,
        dropped_frames: 0,
        video_size: '',
        started: false,
        visibility: document.visibilityState,
        low_latency_mode: lowLatency,
        latency: null,
      };
      const samples = { hlsjs: [], pdt: [] };
      if (!Hls.isSupported()) {
        out.errors.push({ type: 'unsupported', details: 'Hls.isSupported() is false' });
        return out;
      }
      const hls = new Hls({
        // Only what the test pins or ABR picks, never a level capped by the page's size.
        capLevelToPlayerSize: false,
        debug: false,
        lowLatencyMode: lowLatency,
      });
      const played = new Set();
      let startTime = null;
      const describe = (d) => ({
        type: d.type,
        details: d.details,
        fatal: d.fatal,
        reason: d.reason,
        error: d.error ? String(d.error.message ?? d.error) : undefined,
        url: d.frag?.url ?? d.context?.url ?? d.url,
        response: d.response ? { code: d.response.code, text: d.response.text } : undefined,
      });
      hls.on(Hls.Events.ERROR, (_, d) => {
        (d.fatal ? out.errors : out.warnings).push(describe(d));
      });
      const levelUrl = (l) => String(Array.isArray(l.url) ? l.url[0] : l.url);
      hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
        out.level_heights = d.levels.map((l) => l.height);
        if (variantUrl !== null) {
          out.pinned = d.levels.findIndex((l) => levelUrl(l) === variantUrl);
          if (out.pinned < 0) {
            out.errors.push({ type: 'test', details: `hls.js has no level for ${variantUrl}` });
            return;
          }
          hls.currentLevel = out.pinned; // manual: ABR off
        }
        video.play().catch((e) => out.warnings.push({ type: 'play', details: String(e) }));
      });
      hls.on(Hls.Events.FRAG_CHANGED, (_, d) => played.add(d.frag.level));
      let startedAt = null;
      video.addEventListener('playing', () => {
        if (startTime === null) {
          startTime = video.currentTime;
          startedAt = performance.now();
          out.started = true;
          out.start_seconds = (startedAt - loadedAt) / 1000;
        }
      });
      video.addEventListener('waiting', () => {
        if (startTime !== null) out.stalls += 1;
      });
      const loadedAt = performance.now();
      hls.attachMedia(video);
      hls.loadSource(url);

      const tick = () => new Promise((r) => setTimeout(r, 50));
      const startBy = loadedAt + startSeconds * 1000;
      while (startedAt === null && performance.now() < startBy && out.errors.length === 0) {
        await tick();
      }
      if (startedAt === null && out.errors.length === 0) {
        out.errors.push({ type: 'test', details: `not playing ${startSeconds} s after loading` });
      }
      let nextSample = 0;
      while (
        startedAt !== null &&
        performance.now() < startedAt + seconds * 1000 &&
        out.errors.length === 0
      ) {
        await tick();
        if (performance.now() >= nextSample && !video.paused) {
          nextSample = performance.now() + 250;
          if (Number.isFinite(hls.latency)) samples.hlsjs.push(hls.latency);
          const shown = hls.playingDate;
          if (shown) samples.pdt.push((Date.now() - shown.getTime()) / 1000);
        }
      }
      const summary = (xs) => {
        if (xs.length === 0) return null;
        const sorted = [...xs].sort((a, b) => a - b);
        const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
        return { median: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1], samples: xs.length };
      };
      out.latency = { hlsjs: summary(samples.hlsjs), pdt: summary(samples.pdt) };
      if (startTime !== null) out.played_seconds = video.currentTime - startTime;
      const q = video.getVideoPlaybackQuality();
      out.decoded_frames = q.totalVideoFrames;
      out.dropped_frames = q.droppedVideoFrames;
      out.video_size = `${video.videoWidth}x${video.videoHeight}`;
      // Chromium's counters of bytes its decoders took in (0 if a track never decoded).
      out.audio_decoded_bytes = video.webkitAudioDecodedByteCount ?? null;
      out.video_decoded_bytes = video.webkitVideoDecodedByteCount ?? null;
      out.played_levels = [...played].sort((a, b) => a - b);
      out.played_urls = out.played_levels.map((i) => levelUrl(hls.levels[i]));
      out.media_error = video.error ? { code: video.error.code, message: video.error.message } : null;
      if (out.media_error) out.errors.push({ type: 'media', details: out.media_error.message });
      hls.destroy();
      return out;
    },
    { url, seconds, level, variantUrl, startSeconds: START_SECONDS, lowLatency },
  );
  if (result.errors.length > 0 || !result.started) result.console = console_.slice(-20);
  console.log(JSON.stringify(result));
  exitCode = result.errors.length === 0 && result.started ? 0 : 1;
} catch (e) {
  console.log(JSON.stringify({ url, level, errors: [{ type: 'script', details: String(e?.stack ?? e) }] }));
} finally {
  await browser?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
