// Opens Kawa's player page (/watch/{path}) in Debian's headless Chromium and watches it
// as a viewer would: what it says before the stream is live, then whether the video
// plays. Prints one JSON line.
//
//   node watch.mjs PAGE_URL SECONDS [LATENCY_AFTER]
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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, secondsArg, latencyArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const latencyAfter = Number(latencyArg ?? 0);
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
  let latency = null;
  if (latencyAfter > 0 && played >= PLAYED) {
    for (let i = 0; i < 5; i++) {
      const behind = await page.evaluate(() => {
        const date = window.kawaHls && window.kawaHls.playingDate;
        return date ? (Date.now() - date.getTime()) / 1000 : null;
      });
      if (behind !== null) latency = Math.max(latency ?? behind, behind);
      await page.waitForTimeout(1000);
    }
  }
  // One more status refresh of the page (every 500 ms).
  await page.waitForTimeout(600);
  const result = {
    first_status: firstStatus,
    status: await text('status'),
    resolution: await text('resolution'),
    latency: await text('latency'),
    played_seconds: played,
    latency_seconds: latency,
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
