// Time to join, measured in the browser: from `room.connect()` to the first decoded frame of a
// remote participant's video, with livekit-client at its default options (it first tries
// /rtc/v1, gets Pylon's 404, and falls back to /rtc). Chromium (Debian's) via playwright-core.
//
//   node bench/time-to-join.mjs [repetitions]     (default 10; needs target/release/pylon or PYLON_BIN)
import path from 'node:path';
import { existsSync } from 'node:fs';
import { ROOT, joinDemo, launchBrowser, newPage, startPylon, waitForMedia } from '../tests/browser/lib.mjs';

const reps = Number(process.argv[2] ?? 10);
if (!process.env.PYLON_BIN) {
  const release = path.join(ROOT, 'target', 'release', 'pylon');
  if (existsSync(release)) process.env.PYLON_BIN = release;
}

const pylon = await startPylon('time-to-join');
const browser = await launchBrowser();
try {
  // The participant everyone joins to see: publishes camera and microphone from the demo page.
  const host = await newPage(browser, 'host');
  await joinDemo(host, pylon.demoUrl, 'ttj', 'host');
  const warm = await newPage(browser, 'warm');
  await joinDemo(warm, pylon.demoUrl, 'ttj', 'warm');
  await waitForMedia(warm, 'host', 'warm-up');
  await warm.context().close();

  const rows = [];
  for (let i = 0; i < reps; i += 1) {
    const page = await newPage(browser, `joiner-${i}`);
    await page.goto(pylon.demoUrl);
    const r = await page.evaluate(async (identity) => {
      const LK = window.LivekitClient;
      const res = await fetch(`token?room=ttj&identity=${identity}`);
      const { token } = await res.json();
      const room = new LK.Room();
      const firstFrame = new Promise((resolve) => {
        room.on(LK.RoomEvent.TrackSubscribed, (track) => {
          if (track.kind !== LK.Track.Kind.Video) return;
          const el = track.attach();
          el.muted = true;
          document.body.append(el);
          el.requestVideoFrameCallback(() => resolve(performance.now()));
        });
      });
      const t0 = performance.now();
      await room.connect(`ws://${location.host}`, token);
      const connected = performance.now();
      const frame = await firstFrame;
      await room.disconnect();
      return { connectMs: connected - t0, firstFrameMs: frame - t0 };
    }, `joiner-${i}`);
    rows.push(r);
    console.log(JSON.stringify({ rep: i + 1, ...r }));
    await page.context().close();
  }
  const pct = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.round((s.length - 1) * p)];
  };
  const connect = rows.map((r) => r.connectMs);
  const frame = rows.map((r) => r.firstFrameMs);
  console.log(
    JSON.stringify({
      repetitions: reps,
      connect_ms_p50: Math.round(pct(connect, 0.5)),
      connect_ms_max: Math.round(Math.max(...connect)),
      first_frame_ms_p50: Math.round(pct(frame, 0.5)),
      first_frame_ms_max: Math.round(Math.max(...frame)),
      pylon: process.env.PYLON_BIN ?? 'target/debug/pylon',
    }),
  );
} finally {
  await browser.close();
  await pylon.stop();
}
