// Opens Kawa's player page (/watch/{path}) in Debian's headless Chromium and watches it
// as a viewer would: what it says before the stream is live, then whether the video
// plays. Prints one JSON line.
//
//   node watch.mjs PAGE_URL SECONDS [LATENCY_AFTER [SAMPLE_SECONDS]]
//
// The page is opened at once (the test starts the publisher a few seconds later); the
// script waits up to SECONDS for the video to advance by PLAYED seconds.
//   first_status   the page's status text a second after it loaded (before the stream)
//   status, resolution, latency   the page's texts at the end
//   played_seconds how far the video advanced after it first played
//   page_errors    uncaught errors and console errors on the page (but the 404s of the
//                  master while the stream is not live)
//   latency_seconds with LATENCY_AFTER: once the video has played that many seconds, the
//                  wall clock minus the PROGRAM-DATE-TIME on screen (hls.playingDate),
//                  the largest of five readings a second apart
//   latency_median, latency_samples with SAMPLE_SECONDS: the same reading every 250 ms
//                  for that long instead, and its median
//   stalls, stalls_at  how many times the video waited for data once it had played (its
//                  `waiting` events but those within a second of a seek), and where
//   seeks_to       the positions the video was moved to (hls.js's start, the page's
//                  jump to the live edge)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, secondsArg, latencyArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const latencyAfter = Number(latencyArg ?? 0);
const sampleSeconds = Number(process.argv[5] ?? 0);
const PLAYED = Math.max(3, latencyAfter);
if (!url || !(seconds > 0)) {
  console.error('usage: node watch.mjs PAGE_URL SECONDS');
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'kawa-chromium-'));
let browser;
let exitCode = 1;
try {
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  const pageErrors = [];
  // The page asks for the master every 2 s while the stream is offline: those 404s are
  // expected, and the browser logs each; anything else is an error.
  const expected404 = /^Failed to load resource: .* 404 \(Not Found\)$/;
  page.on('console', (m) => {
    if (m.type() === 'error' && !expected404.test(m.text())) pageErrors.push(m.text());
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(url);
  // Stalls: the video waiting for data once it has played.
  await page.$eval('#video', (v) => {
    window.kawaStalls = 0;
    window.kawaStallsAt = [];
    // A seek (hls.js's start, the page's jump to the live edge) waits while the decoder
    // goes from the keyframe to the new position: that wait is the seek's, not a stall
    // for data. Seeks are reported on their own.
    window.kawaSeeks = [];
    let seekedAt = -Infinity;
    v.addEventListener('seeking', () => {
      window.kawaSeeks.push(v.currentTime);
      seekedAt = performance.now();
    });
    v.addEventListener('waiting', () => {
      if (v.currentTime <= 0 || performance.now() - seekedAt < 1000) return;
      window.kawaStalls++;
      // Where: the position, the buffered ranges, the playing rate.
      const b = v.buffered;
      const ranges = [];
      for (let i = 0; i < b.length; i++) ranges.push([b.start(i), b.end(i)]);
      window.kawaStallsAt.push({ at: v.currentTime, buffered: ranges, rate: v.playbackRate });
    });
  });
  await page.waitForTimeout(1000);
  const text = (id) => page.$eval(`#${id}`, (e) => e.textContent);
  const firstStatus = await text('status');
  const deadline = Date.now() + seconds * 1000;
  let firstPlay = null;
  let played = 0;
  while (Date.now() < deadline) {
    const t = await page.$eval('#video', (v) => v.currentTime);
    if (t > 0 && firstPlay === null) firstPlay = t;
    if (firstPlay !== null) played = t - firstPlay;
    if (played >= PLAYED) break;
    await page.waitForTimeout(250);
  }
  const behindLive = () => page.evaluate(() => {
    const date = window.kawaHls && window.kawaHls.playingDate;
    return date ? (Date.now() - date.getTime()) / 1000 : null;
  });
  let latency = null;
  const samples = [];
  let stallsBefore = null;
  if (latencyAfter > 0 && played >= PLAYED && sampleSeconds > 0) {
    stallsBefore = await page.evaluate(() => window.kawaStalls);
    const end = Date.now() + sampleSeconds * 1000;
    while (Date.now() < end) {
      const behind = await behindLive();
      if (behind !== null) samples.push(behind);
      await page.waitForTimeout(250);
    }
  } else if (latencyAfter > 0 && played >= PLAYED) {
    for (let i = 0; i < 5; i++) {
      const behind = await behindLive();
      if (behind !== null) latency = Math.max(latency ?? behind, behind);
      await page.waitForTimeout(1000);
    }
  }
  const sorted = [...samples].sort((a, b) => a - b);
  // One more status refresh of the page (every 500 ms).
  await page.waitForTimeout(600);
  const result = {
    first_status: firstStatus,
    status: await text('status'),
    resolution: await text('resolution'),
    latency: await text('latency'),
    played_seconds: played,
    latency_seconds: latency,
    latency_median: sorted.length ? sorted[Math.floor(sorted.length / 2)] : null,
    latency_samples: samples.length,
    stalls_while_sampling: stallsBefore === null
      ? null : (await page.evaluate(() => window.kawaStalls)) - stallsBefore,
    stalls: await page.evaluate(() => window.kawaStalls),
    stalls_at: await page.evaluate(() => window.kawaStallsAt),
    seeks_to: await page.evaluate(() => window.kawaSeeks),
    page_errors: pageErrors,
  };
  console.log(JSON.stringify(result));
  exitCode = played >= PLAYED ? 0 : 1;
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
} finally {
  if (browser) await browser.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
