// Opens Kawa's player page with ?mode=webrtc in Debian's headless Chromium and measures
// how far behind the publisher it plays. The test publisher draws its wall clock into
// the top 16 rows of every picture (20 black or white blocks: the milliseconds modulo
// 2^20, least significant bit first); each frame the page shows is read back from a
// canvas and its age is the page's clock minus the one drawn. Prints one JSON line.
//
//   node whep.mjs PAGE_URL SECONDS
//
//   status, latency    the page's texts at the end
//   first_picture_ms   from opening the page to the first picture
//   played_seconds     how far the video advanced
//   ages_ms            the age of every frame shown during SECONDS after it first played
//   unreadable         frames whose clock could not be read (or was over 10 s old)
//   video, audio       the peer connection's inbound-rtp statistics at the end (audio:
//                      measured_samples, measured_concealed over the measured seconds)
//   page_errors        uncaught errors and console errors on the page
import { withPage } from './browser.mjs';

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
if (!url || !(seconds > 0)) {
  console.error('usage: node whep.mjs PAGE_URL SECONDS');
  process.exit(2);
}

let exitCode = 1;
try {
  await withPage(async (page, lines) => {
    const opened = Date.now();
    await page.goto(url);
    // Until the picture moves (at most 30 s: the stream, ICE, DTLS, the first keyframe).
    const deadline = Date.now() + 30_000;
    let first = null;
    let firstPictureMs = null;
    while (Date.now() < deadline) {
      const t = await page.$eval('#video', (v) => (v.videoWidth > 0 ? v.currentTime : 0));
      if (t > 0) {
        first = t;
        firstPictureMs = Date.now() - opened;
        break;
      }
      await page.waitForTimeout(20);
    }
    const inbound = () => page.evaluate(async () => {
      const out = { video: null, audio: null };
      if (!window.kawaWebRtc) return out;
      (await window.kawaWebRtc.getStats()).forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        out[s.kind] = {
          packets_received: s.packetsReceived,
          packets_lost: s.packetsLost,
          nacks: s.nackCount,
          frames_decoded: s.framesDecoded,
          frame_width: s.frameWidth,
          frame_height: s.frameHeight,
          total_samples_received: s.totalSamplesReceived,
          concealed_samples: s.concealedSamples,
          jitter_buffer_ms: s.jitterBufferEmittedCount
            ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : null,
        };
      });
      return out;
    });
    const before = await inbound();
    const measured = first === null ? { ages: [], unreadable: 0 } : await page.evaluate(async (seconds) => {
      const video = document.getElementById('video');
      const canvas = document.createElement('canvas');
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      const ages = [];
      let unreadable = 0;
      // The blocks' levels in the last unreadable frame (for the report).
      let levels = null;
      const end = Date.now() + seconds * 1000;
      await new Promise((resolve) => {
        const frame = () => {
          const [w, h] = [video.videoWidth, video.videoHeight];
          if (w > 0 && h > 0) {
            canvas.width = w;
            canvas.height = h;
            ctx.drawImage(video, 0, 0, w, h);
            // The middle of the blocks' rows and columns, whatever the picture's size.
            const row = ctx.getImageData(0, Math.floor((8 * h) / 240), w, 1).data;
            let drawn = 0;
            const seen = [];
            for (let bit = 0; bit < 20; bit++) {
              const x = Math.floor(((bit + 0.5) * w) / 20);
              seen.push(row[4 * x]);
              if (row[4 * x] > 128) drawn += 2 ** bit;
            }
            const age = (((Date.now() % 2 ** 20) - drawn) + 2 ** 20) % 2 ** 20;
            if (age < 10_000) ages.push(age);
            else {
              unreadable += 1;
              levels = { seen, drawn, now: Date.now() % 2 ** 20 };
            }
          }
          if (Date.now() < end) video.requestVideoFrameCallback(frame);
          else resolve();
        };
        video.requestVideoFrameCallback(frame);
      });
      return { ages, unreadable, levels };
    }, seconds);
    const stats = await inbound();
    // Audio during the measured seconds: how much of it the browser had to make up.
    if (stats.audio && before.audio) {
      stats.audio.measured_samples =
        stats.audio.total_samples_received - before.audio.total_samples_received;
      stats.audio.measured_concealed = stats.audio.concealed_samples - before.audio.concealed_samples;
    }
    const text = (id) => page.$eval(`#${id}`, (e) => e.textContent);
    const last = await page.$eval('#video', (v) => v.currentTime);
    const result = {
      status: await text('status'),
      latency: await text('latency'),
      first_picture_ms: firstPictureMs,
      played_seconds: first === null ? 0 : last - first,
      ages_ms: measured.ages,
      unreadable: measured.unreadable,
      unreadable_levels: measured.levels ?? null,
      video: stats.video,
      audio: stats.audio,
      page_errors: lines.filter((l) => l.startsWith('error:') || l.startsWith('pageerror:')),
    };
    console.log(JSON.stringify(result));
    exitCode = measured.ages.length > 0 ? 0 : 1;
  });
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
}
process.exit(exitCode);
