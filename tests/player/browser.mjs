// Debian's headless Chromium through playwright-core, set up as the player tests need:
// muted autoplay allowed, loopback reads allowed, a throw-away profile.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

// Runs `work(page, consoleLines)` in a fresh browser and always cleans up.
export async function withPage(work) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'kawa-chromium-'));
  let browser;
  try {
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      // Pages at a made-up origin read Kawa on loopback (Local Network Access).
      permissions: ['local-network-access'],
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--autoplay-policy=no-user-gesture-required'],
    });
    const page = browser.pages()[0] ?? (await browser.newPage());
    const lines = [];
    page.on('console', (m) => lines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => lines.push(`pageerror: ${e.message}`));
    return await work(page, lines);
  } finally {
    await browser?.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
}
