// Time to join, measured in the browser: from `room.connect()` to the first decoded frame of a
// remote participant's video, with livekit-client at its default options. Two servers in one
// run, joined in turn: one serving `/rtc/v1` (single peer connection, the default) and one with
// `rtc.single_peer_connection: false`, where the SDK first tries `/rtc/v1`, gets a 404 (and a
// 404 from `/rtc/v1/validate`) and falls back to `/rtc` with two peer connections. Chromium
// (Debian's) via playwright-core.
//
// The joiners reach each server's HTTP port through a proxy that delays every chunk by
// `delay-ms` each way (default 40: an 80 ms round trip, a client in another country), as the
// fallback's cost is round trips; media stays on loopback (this kernel has no netem).
//
//   node bench/time-to-join.mjs [repetitions] [delay-ms]   (default 10 per mode, 40 ms; needs target/release/pylon or PYLON_BIN)
import path from 'node:path';
import net from 'node:net';
import { existsSync } from 'node:fs';
import { ROOT, joinDemo, launchBrowser, newPage, startPylon, waitForMedia } from '../tests/browser/lib.mjs';

const reps = Number(process.argv[2] ?? 10);
const delayMs = Number(process.argv[3] ?? 40);

/** A TCP proxy on a free loopback port to `port`, delaying each chunk `delayMs` each way. */
async function delayProxy(port) {
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    const pipe = (from, to) => {
      from.on('data', (chunk) => setTimeout(() => to.destroyed || to.write(chunk), delayMs));
      from.on('end', () => setTimeout(() => to.end(), delayMs));
      from.on('error', () => to.destroy());
    };
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/demo/`, close: () => server.close() };
}
if (!process.env.PYLON_BIN) {
  const release = path.join(ROOT, 'target', 'release', 'pylon');
  if (existsSync(release)) process.env.PYLON_BIN = release;
}

const MODES = {
  v1: 'rtc:\n  single_peer_connection: true\n',
  fallback: 'rtc:\n  single_peer_connection: false\n',
};

/** One join into the room `host` publishes in: connect and first-frame times in ms. */
async function join(browser, demoUrl, identity) {
  const page = await newPage(browser, identity);
  await page.goto(demoUrl);
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
  }, identity);
  await page.context().close();
  return r;
}

const servers = {};
const proxies = {};
const browser = await launchBrowser();
try {
  for (const [mode, config] of Object.entries(MODES)) {
    const pylon = await startPylon(`time-to-join-${mode}`, { config });
    servers[mode] = pylon;
    proxies[mode] = await delayProxy(pylon.httpPort);
    // The participant everyone joins to see: publishes camera and microphone from the demo page.
    const host = await newPage(browser, `host-${mode}`);
    await joinDemo(host, pylon.demoUrl, 'ttj', 'host');
    const warm = await newPage(browser, `warm-${mode}`);
    await joinDemo(warm, pylon.demoUrl, 'ttj', 'warm');
    await waitForMedia(warm, 'host', `warm-up (${mode})`);
    await warm.context().close();
  }
  const rows = { v1: [], fallback: [] };
  for (let i = 0; i < reps; i += 1) {
    // Alternate the modes so that drift on a noisy machine hits both alike.
    for (const mode of i % 2 ? ['fallback', 'v1'] : ['v1', 'fallback']) {
      const r = await join(browser, proxies[mode].url, `joiner-${i}`);
      rows[mode].push(r);
      console.log(JSON.stringify({ rep: i + 1, mode, ...r }));
    }
  }
  const pct = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.round((s.length - 1) * p)];
  };
  const summary = {};
  for (const [mode, rs] of Object.entries(rows)) {
    const connect = rs.map((r) => r.connectMs);
    const frame = rs.map((r) => r.firstFrameMs);
    summary[mode] = {
      connect_ms_p50: Math.round(pct(connect, 0.5)),
      connect_ms_max: Math.round(Math.max(...connect)),
      first_frame_ms_p50: Math.round(pct(frame, 0.5)),
      first_frame_ms_max: Math.round(Math.max(...frame)),
    };
  }
  const ratio = summary.v1.first_frame_ms_p50 / summary.fallback.first_frame_ms_p50;
  console.log(
    JSON.stringify({
      repetitions: reps,
      signalling_delay_ms_each_way: delayMs,
      ...summary,
      first_frame_p50_v1_over_fallback: Number(ratio.toFixed(2)),
      pylon: process.env.PYLON_BIN ?? 'target/debug/pylon',
    }),
  );
} finally {
  await browser.close();
  for (const proxy of Object.values(proxies)) proxy.close();
  for (const pylon of Object.values(servers)) await pylon.stop();
}
