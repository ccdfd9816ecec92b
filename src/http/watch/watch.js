// Kawa's player page: plays /hls/{path}/master.m3u8 with hls.js in low-latency mode (or
// natively in Safari), shows live/offline, the picture's size and how far behind live it
// plays, and waits for a stream that is not live yet.
(() => {
  'use strict';
  const master = document.currentScript.dataset.master;
  const video = document.getElementById('video');
  const status = document.getElementById('status');
  const resolution = document.getElementById('resolution');
  const latency = document.getElementById('latency');
  const POLL_MS = 2000;
  let hls = null;
  let lastTime = -1;

  const show = (element, text) => {
    if (element.textContent !== text) element.textContent = text;
  };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Until the master playlist exists (the stream went live).
  async function waitForStream() {
    show(status, 'offline: waiting for the stream');
    for (;;) {
      try {
        const answer = await fetch(master, { cache: 'no-store' });
        if (answer.ok) return;
      } catch (_) {
        // Kawa unreachable for a moment: keep asking.
      }
      await sleep(POLL_MS);
    }
  }

  function play() {
    if (window.Hls && Hls.isSupported()) {
      // A viewer who joins an encoder with keyframes far apart starts at the last one,
      // behind live: playing a little faster (up to 1.5x) brings them back to the live
      // edge instead of leaving them there. A stall (a join before the next keyframe
      // arrived) moves the target latency back by about a part, not hls.js's default
      // second, which would keep the viewer a second further behind for good.
      hls = new Hls({
        lowLatencyMode: true,
        maxLiveSyncPlaybackRate: 1.5,
        liveSyncOnStallIncrease: 0.25,
      });
      // For tests and embedding pages: the wall clock of what plays (hls.playingDate).
      window.kawaHls = hls;
      hls.on(Hls.Events.ERROR, (_, data) => {
        if (!data.fatal) return;
        hls.destroy();
        hls = null;
        start();
      });
      hls.loadSource(master);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = master;
    } else {
      show(status, 'this browser cannot play HLS');
      return;
    }
    video.play().catch(() => {});
  }

  async function start() {
    await waitForStream();
    show(status, 'loading');
    play();
  }

  video.addEventListener('ended', () => show(status, 'ended'));
  setInterval(() => {
    if (video.videoWidth > 0) show(resolution, `${video.videoWidth}x${video.videoHeight}`);
    const behind = hls && Number.isFinite(hls.latency) ? hls.latency : null;
    // Kawa points players at the newest keyframe (EXT-X-START) when the live edge has
    // none (an encoder with keyframes far apart), so playing starts seconds behind: jump
    // forward through what is buffered (the decoder starts from the keyframe already
    // buffered).
    if (behind !== null && behind > 3 && !video.paused && video.buffered.length) {
      // As close to the live edge as the buffer allows (a little short of its end, so
      // that playing goes on without waiting).
      const end = video.buffered.end(video.buffered.length - 1);
      const live = hls.liveSyncPosition;
      const target = Math.min(Number.isFinite(live) && live > 0 ? live : end, end - 0.5);
      if (target > video.currentTime + 1) video.currentTime = target;
    }
    if (behind !== null) show(latency, `${behind.toFixed(1)} s behind live`);
    if (!video.ended && !video.paused && video.currentTime !== lastTime && video.currentTime > 0) {
      show(status, 'live');
    }
    lastTime = video.currentTime;
  }, 500);
  start();
})();
