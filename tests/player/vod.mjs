// Plays a recording (a VOD playlist) from start to end with a real hls.js in headless
// Chromium, fast (playbackRate RATE), and prints one JSON line:
//
//   node vod.mjs URL
//
//   duration        video.duration once hls.js attached the recording
//   total_duration  hls.js's sum of the playlist's EXTINFs (its level details)
//   ended           the `ended` event came: played to the end
//   played_seconds  the length of video.played (what was actually played)
//   decoded_frames  Chromium's count of decoded video frames
//   errors          hls.js fatal errors and media errors
// Exits 1 when it did not play to the end or hit a fatal error.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withPage } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [url] = process.argv.slice(2);
const RATE = 8;
const LIMIT_SECONDS = 90;
if (!url) {
  console.error('usage: node vod.mjs URL');
  process.exit(2);
}

// Another origin than Kawa's, as for a player embedded in someone's site (see play.mjs).
const PAGE = 'http://localhost:65535/vod.html';
const HTML = `<!doctype html><html><head><meta charset="utf-8"></head>
<body><video id="v" muted playsinline width="320" height="240"></video></body></html>`;

let result;
try {
  result = await withPage(async (page, lines) => {
    await page.route(PAGE, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: HTML }));
    await page.goto(PAGE);
    await page.addScriptTag({ path: join(here, 'node_modules/hls.js/dist/hls.min.js') });
    const out = await page.evaluate(
      async ({ url, rate, limit }) => {
        const video = document.getElementById('v');
        const out = { url, duration: null, total_duration: null, ended: false, played_seconds: 0,
          decoded_frames: 0, stalls: 0, errors: [], warnings: [] };
        const hls = new Hls({ capLevelToPlayerSize: false });
        hls.on(Hls.Events.ERROR, (_, d) => {
          const e = { type: d.type, details: d.details, url: d.frag?.url ?? d.context?.url };
          (d.fatal ? out.errors : out.warnings).push(e);
        });
        hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
          out.total_duration = d.details.totalduration;
          out.live = d.details.live;
        });
        hls.on(Hls.Events.MANIFEST_PARSED, () => {
          video.playbackRate = rate;
          video.play().catch((e) => out.warnings.push({ type: 'play', details: String(e) }));
        });
        video.addEventListener('ended', () => { out.ended = true; });
        video.addEventListener('waiting', () => { out.stalls += 1; });
        hls.attachMedia(video);
        hls.loadSource(url);
        const until = performance.now() + limit * 1000;
        while (!out.ended && out.errors.length === 0 && performance.now() < until) {
          await new Promise((r) => setTimeout(r, 100));
          if (Number.isFinite(video.duration)) out.duration = video.duration;
          // hls.js signals the end of a VOD to the MediaSource; keep the rate set.
          if (video.playbackRate !== rate) video.playbackRate = rate;
        }
        for (let i = 0; i < video.played.length; i++) {
          out.played_seconds += video.played.end(i) - video.played.start(i);
        }
        out.decoded_frames = video.getVideoPlaybackQuality().totalVideoFrames;
        if (video.error) out.errors.push({ type: 'media', details: video.error.message });
        hls.destroy();
        return out;
      },
      { url, rate: RATE, limit: LIMIT_SECONDS },
    );
    if (!out.ended || out.errors.length > 0) out.console = lines.slice(-20);
    return out;
  });
} catch (e) {
  result = { url, errors: [{ type: 'script', details: String(e?.stack ?? e) }] };
}
console.log(JSON.stringify(result));
process.exit(result.ended && result.errors.length === 0 ? 0 : 1);
