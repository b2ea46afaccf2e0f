// livekit-client with adaptiveStream (the demo page's `?adaptive=1`): each browser receives the
// layer of a Python SDK participant's 1280x720 camera that its tile's size needs, and moves to
// another layer when the tile is resized: a simulcast stream of VP8, a spatial layer of VP9's
// one SVC stream.
import test from 'node:test';
import assert from 'node:assert/strict';
import { inbound, joinDemo, launchBrowser, newPage, pythonParticipant, startPylon, waitFor } from './lib.mjs';

/** Give `page`'s tile of `identity` a fixed size in CSS pixels. */
async function sizeTile(page, identity, width, height) {
  await page.evaluate(
    ([identity, width, height]) => {
      document.getElementById('tiles').style.display = 'block';
      const tile = document.getElementById(`tile-${identity}`);
      Object.assign(tile.style, { width: `${width}px`, height: `${height}px`, aspectRatio: 'auto' });
    },
    [identity, width, height],
  );
}

async function receivesWidth(page, label, width) {
  let last = null;
  await waitFor(
    async () => {
      last = await inbound(page, 'py');
      return last.frameWidth === width;
    },
    30000,
    `${label} to decode frames ${width} wide`,
  ).catch((e) => {
    throw new Error(`${e.message}; last: ${JSON.stringify(last)}`);
  });
}

for (const codec of ['VP8', 'VP9']) {
  test(`with adaptive stream a small tile gets a small layer and a large tile a large one (${codec})`, { timeout: 180000 }, async (t) => {
    const pylon = await startPylon(`adaptive-${codec}`);
    // One browser each: of two pages in one headless Chromium only one is visible, and
    // livekit-client stops reporting a hidden page's element sizes.
    const browsers = [await launchBrowser(), await launchBrowser()];
    const py = await pythonParticipant(pylon, 'adaptive', 'py', ['--video-size', '1280x720', '--codec', codec]);
    t.after(async () => {
      await py.stop();
      for (const b of browsers) await b.close();
      await pylon.stop();
    });
    await waitFor(() => py.events.some((e) => e.event === 'connected'), 30000, 'the Python participant to connect');
    const small = await newPage(browsers[0], 'small');
    const large = await newPage(browsers[1], 'large');
    for (const [page, name] of [[small, 'small'], [large, 'large']]) {
      await joinDemo(page, pylon.demoUrl, 'adaptive', name, '?adaptive=1');
      await page.waitForSelector('#tile-py video', { timeout: 30000 });
    }
    await sizeTile(small, 'py', 160, 90);
    await sizeTile(large, 'py', 1280, 720);
    // The layers of a 1280x720 camera: 320x180, 640x360, 1280x720.
    await receivesWidth(small, 'the 160x90 tile', 320);
    await receivesWidth(large, 'the 1280x720 tile', 1280);

    // Swap the sizes: each browser moves to the other's layer.
    await sizeTile(small, 'py', 1280, 720);
    await sizeTile(large, 'py', 160, 90);
    await receivesWidth(small, 'the tile grown to 1280x720', 1280);
    await receivesWidth(large, 'the tile shrunk to 160x90', 320);
    assert.deepEqual([...small.problems, ...large.problems], []);
    assert.ok(pylon.alive(), 'pylon is still running');
  });
}
