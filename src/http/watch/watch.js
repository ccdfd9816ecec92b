// Kawa's player page: plays /hls/{path}/master.m3u8 with hls.js in low-latency mode (or
// natively in Safari), shows live/offline, the picture's size and how far behind live it
// plays, and waits for a stream that is not live yet. With ?mode=webrtc it plays over
// WebRTC instead (WHEP: POST /whep/{path}), well under a second behind, and falls back to
// HLS when the stream cannot be sent that way.
(() => {
  'use strict';
  const master = document.currentScript.dataset.master;
  const whep = document.currentScript.dataset.whep;
  const webrtcWanted = new URLSearchParams(location.search).get('mode') === 'webrtc';
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
      // The sync target is the playlist's PART-HOLD-BACK (three parts), hls.js's own
      // in low-latency mode. Its catch-up is off (a rate of 1): it speeds up only with
      // more than a second buffered, which a viewer three parts behind never has, so a
      // viewer stayed wherever starting left them (1.1 s behind live, measured). The
      // page catches up itself (`catchUp`). A stall (a join before the next keyframe
      // arrived) moves the target back by about a part, not hls.js's default second,
      // which would keep the viewer a second further behind for good.
      hls = new Hls({
        lowLatencyMode: true,
        maxLiveSyncPlaybackRate: 1,
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

  // WebRTC (WHEP): the peer connection, while one is open.
  let pc = null;
  let session = null;

  // Plays over WebRTC; false when the stream cannot be sent that way (then HLS plays).
  async function playWebRtc() {
    pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const media = new MediaStream();
    video.srcObject = media;
    pc.ontrack = (event) => media.addTrack(event.track);
    pc.oniceconnectionstatechange = () => {
      const state = pc && pc.iceConnectionState;
      if (state === 'failed' || state === 'disconnected' || state === 'closed') restart();
    };
    await pc.setLocalDescription(await pc.createOffer());
    const answer = await fetch(whep, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    if (answer.status !== 201) {
      const why = (await answer.text()).trim();
      pc.close();
      pc = null;
      video.srcObject = null;
      show(latency, `WebRTC: ${why || answer.status}`);
      return false;
    }
    session = new URL(answer.headers.get('Location'), location.href).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: await answer.text() });
    window.kawaWebRtc = pc;
    video.play().catch(() => {});
    return true;
  }

  function restart() {
    if (!pc) return;
    pc.close();
    pc = null;
    if (session) fetch(session, { method: 'DELETE' }).catch(() => {});
    session = null;
    setTimeout(start, 1000);
  }

  // The jitter buffer's delay: how long frames wait in the browser before they show.
  async function webrtcDelay() {
    if (!pc) return null;
    let delay = null;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.jitterBufferEmittedCount > 0) {
        delay = s.jitterBufferDelay / s.jitterBufferEmittedCount;
      }
    });
    return delay;
  }

  async function start() {
    await waitForStream();
    show(status, 'loading');
    if (webrtcWanted && window.RTCPeerConnection) {
      try {
        if (await playWebRtc()) return;
      } catch (e) {
        show(latency, `WebRTC: ${e}`);
      }
    }
    play();
  }

  window.addEventListener('pagehide', () => {
    // The session ends now rather than at the server's timeout.
    if (session) fetch(session, { method: 'DELETE', keepalive: true }).catch(() => {});
  });

  // Plays a little faster while further behind live than hls.js's target and there is
  // buffer to spend: 1.1x, 1.25x or 1.5x, by how far (browsers keep the pitch). A viewer
  // who joined at a keyframe seconds back comes to the live edge; one a few tenths
  // behind gets there in a few seconds. With under 0.4 s buffered it plays at 1x:
  // speeding up then would only make it wait for data.
  function catchUp() {
    if (!hls || video.paused || !video.buffered.length) return;
    const target = hls.targetLatency;
    const behind = hls.latency;
    if (!Number.isFinite(target) || !Number.isFinite(behind) || behind <= 0) return;
    const excess = behind - target;
    // What plays without a break from here: the buffered range holding the position
    // (a later one lies beyond a hole, which hls.js fills or skips).
    let ahead = 0;
    for (let i = 0; i < video.buffered.length; i++) {
      const [from, to] = [video.buffered.start(i), video.buffered.end(i)];
      if (from <= video.currentTime && video.currentTime <= to) ahead = to - video.currentTime;
    }
    // A few steps, changed rarely: Chromium answered a rate changed at every update
    // with a stall, though a second was buffered.
    let rate = excess > 2 ? 1.5 : excess > 0.3 ? 1.25 : excess > 0.1 ? 1.1 : null;
    if (rate === null) rate = excess <= 0.03 ? 1 : Math.min(video.playbackRate, 1.1);
    if (ahead < 0.4) rate = 1;
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }
  video.addEventListener('timeupdate', catchUp);

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
    if (pc) {
      webrtcDelay().then((delay) => {
        if (delay !== null) show(latency, `WebRTC, ${Math.round(delay * 1000)} ms jitter buffer`);
      });
    }
    if (!video.ended && !video.paused && video.currentTime !== lastTime && video.currentTime > 0) {
      show(status, 'live');
    }
    lastTime = video.currentTime;
  }, 500);
  start();
})();
