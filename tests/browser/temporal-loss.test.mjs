// A viewer that asks for fewer frames per second (livekit-client's setVideoFPS) of a Python
// SDK camera gets only the lower temporal layers, its frames renumbered to follow one another
// (forwarder.rs, vp8_munger.rs), while 3 % of the media reaching the server is lost and
// retransmitted late: the late packets must go out under the numbers of their own frames. The
// viewer, asking for 15 fps, keeps decoding at the rate it decoded before the loss, without a
// freeze over 1 s. The server runs in a network namespace of the test's own (netns.mjs),
// whose nftables drop the media on its way in.
import test from 'node:test';
import assert from 'node:assert/strict';
import { inbound, joinDemo, launchBrowser, newPage, pythonParticipant, setVideoFps, sleep, startPylon, waitFor, waitForMedia } from './lib.mjs';
import { isRoot, serverNamespace } from './netns.mjs';

/** Over `ms`: frames `page` decoded of `identity`, and the longest time (s) without one. */
async function watch(page, identity, ms) {
  const first = await inbound(page, identity);
  let last = first.framesDecoded;
  let since = Date.now();
  let longest = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    await sleep(100);
    const n = (await inbound(page, identity)).framesDecoded;
    const now = Date.now();
    if (n > last) {
      last = n;
      since = now;
    }
    longest = Math.max(longest, (now - since) / 1000);
  }
  return { frames: last - first.framesDecoded, longest };
}

test('a viewer asking for 15 fps keeps its frame rate while the publisher loses packets', { skip: !isRoot() && 'needs root (a network namespace and nftables)', timeout: 180000 }, async (t) => {
  const netns = serverNamespace('tl');
  t.after(() => netns.remove());
  const pylon = await startPylon('temporal-loss', { netns });
  t.after(() => pylon.stop());
  const py = await pythonParticipant(pylon, 'temporal-loss', 'py', ['--video-size', '1280x720']);
  t.after(() => py.stop());
  const browser = await launchBrowser([`--unsafely-treat-insecure-origin-as-secure=http://${netns.host}:${pylon.httpPort}`]);
  t.after(() => browser.close());
  await waitFor(() => py.events.some((e) => e.event === 'connected'), 30000, 'the Python participant to connect');
  const page = await newPage(browser, 'viewer');
  await joinDemo(page, pylon.demoUrl, 'temporal-loss', 'viewer');
  await waitForMedia(page, 'py', 'the viewer');

  // 15 fps: T0 and T1 of the 30 fps top layer; every other frame is skipped.
  await setVideoFps(page, 'py', 15);
  let thinned = { frames: 0 };
  await waitFor(async () => {
    thinned = await watch(page, 'py', 5000);
    return thinned.frames > 40 && thinned.frames < 90;
  }, 60000, 'the viewer to decode about 15 fps').catch((e) => {
    throw new Error(`${e.message}; last: ${thinned.frames} frames in 5 s`);
  });

  netns.uplinkLoss(3, 600);
  const lossy = await watch(page, 'py', 15000);
  const dropped = netns.uplinkDropped();
  const size = (await inbound(page, 'py')).frameWidth;
  const line = `frames in 15 s: ${lossy.frames}, longest without a frame: ${lossy.longest.toFixed(2)} s (before the loss: ${thinned.frames} in 5 s; ${dropped} datagrams dropped; ${size} wide)`;
  console.log(`TEMPORAL_LOSS ${line}`);
  assert.ok(dropped > 0, `the uplinks lost nothing: ${line}`);
  const before = thinned.frames / 5;
  assert.ok(lossy.frames / 15 > 0.8 * before, `the viewer keeps decoding at the rate it asked for: ${line}`);
  assert.ok(lossy.longest < 1.0, `no freeze over 1 s: ${line}`);
});
