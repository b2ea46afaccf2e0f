// livekit-client's RemoteTrackPublication.setVideoFPS (UpdateTrackSettings.fps): a browser
// asking for a lower frame rate of a Python SDK participant's camera (VP8 simulcast at 30 fps,
// which libwebrtc encodes with three temporal layers) receives only the lower temporal layers,
// still decoding, and every frame again when it asks for 30; of a camera at 15 fps, the
// request is read against the frame rates the server measures. A VP9 camera (one stream of
// three spatial and three temporal layers, L3T3_KEY) is thinned the same way.
import test from 'node:test';
import assert from 'node:assert/strict';
import { inbound, joinDemo, launchBrowser, newPage, pythonParticipant, setVideoFps, sleep, startPylon, waitFor, waitForMedia } from './lib.mjs';

/** Frames per second `page` decodes of `identity`'s video, over `ms`. */
async function decodedFps(page, identity, ms = 3000) {
  const a = await inbound(page, identity);
  await sleep(ms);
  const b = await inbound(page, identity);
  return ((b.framesDecoded - a.framesDecoded) * 1000) / ms;
}

/** `page` decodes more than 20 fps of `identity`'s 30 fps camera, about 7.5 (the base temporal
 * layer) when it asks for 8, and more than 20 again when it asks for 30; returns the three. */
async function thinsAndRestores(page, identity) {
  let full = 0;
  await waitFor(async () => (full = await decodedFps(page, identity)) > 20, 30000, 'the viewer to decode more than 20 fps').catch((e) => {
    throw new Error(`${e.message}; last: ${full} fps`);
  });
  // 8 fps: only the base temporal layer (7.5 fps) fits.
  await setVideoFps(page, identity, 8);
  let low = full;
  await waitFor(async () => (low = await decodedFps(page, identity)) < 11, 30000, 'the viewer to decode about 7.5 fps').catch((e) => {
    throw new Error(`${e.message}; last: ${low} fps (was ${full})`);
  });
  assert.ok(low > 4, `the viewer still decodes video at a lower rate (${low} fps)`);
  // Back to every frame.
  await setVideoFps(page, identity, 30);
  let again = low;
  await waitFor(async () => (again = await decodedFps(page, identity)) > 20, 30000, 'the viewer to decode every frame again').catch((e) => {
    throw new Error(`${e.message}; last: ${again} fps`);
  });
  return `full=${full.toFixed(1)} fps, asked 8: ${low.toFixed(1)} fps, asked 30: ${again.toFixed(1)} fps`;
}

test('a subscriber asking for fewer frames per second gets the lower temporal layers, then all again', { timeout: 180000 }, async (t) => {
  const pylon = await startPylon('temporal');
  const browser = await launchBrowser();
  const py = await pythonParticipant(pylon, 'temporal', 'py', ['--video-size', '1280x720']);
  t.after(async () => {
    await py.stop();
    await browser.close();
    await pylon.stop();
  });
  await waitFor(() => py.events.some((e) => e.event === 'connected'), 30000, 'the Python participant to connect');
  const page = await newPage(browser, 'viewer');
  await joinDemo(page, pylon.demoUrl, 'temporal', 'viewer');
  await waitForMedia(page, 'py', 'the viewer');
  console.log(`TEMPORAL ${await thinsAndRestores(page, 'py')}`);

  // A camera at 15 fps (temporal layers at 3.75, 7.5 and 15 fps): the server maps a request
  // onto the frame rates it measures, not onto an assumed 30 fps. Asking for 15 keeps every
  // frame (an assumed 30 would give the 7.5 fps layer), asking for 8 gives the 7.5 fps layer
  // (an assumed 30: the 3.75 fps base). The publisher's encoder makes 10-15 frames a second
  // on this loaded machine, so each is waited for rather than read once; an assumed 30 would
  // give at most 7.5 fps for 15, and at most 3.75 for 8.
  const slow = await pythonParticipant(pylon, 'temporal', 'py15', ['--video-size', '640x360', '--fps', '15']);
  t.after(() => slow.stop());
  await waitForMedia(page, 'py15', 'the viewer');
  await setVideoFps(page, 'py15', 15);
  let fifteen = 0;
  await waitFor(async () => (fifteen = await decodedFps(page, 'py15')) > 8.5, 30000, 'the viewer to decode more than 8.5 fps of the 15 fps camera asking 15').catch((e) => {
    throw new Error(`${e.message}; last: ${fifteen} fps`);
  });
  await setVideoFps(page, 'py15', 8);
  let half = fifteen;
  await waitFor(async () => (half = await decodedFps(page, 'py15')) > 4.5 && half < 9, 30000, 'the viewer to decode about 7.5 fps of the 15 fps camera asking 8').catch((e) => {
    throw new Error(`${e.message}; last: ${half} fps`);
  });
  console.log(`TEMPORAL_15 asked 15: ${fifteen.toFixed(1)} fps, asked 8: ${half.toFixed(1)} fps`);
  assert.deepEqual(page.problems, []);
  assert.ok(pylon.alive(), 'pylon is still running');
});

test('of a VP9 camera (SVC), a subscriber asking for fewer frames per second gets fewer, then all again', { timeout: 120000 }, async (t) => {
  const pylon = await startPylon('temporal-vp9');
  const browser = await launchBrowser();
  const py = await pythonParticipant(pylon, 'temporal', 'py', ['--video-size', '1280x720', '--codec', 'VP9']);
  t.after(async () => {
    await py.stop();
    await browser.close();
    await pylon.stop();
  });
  const page = await newPage(browser, 'viewer');
  await joinDemo(page, pylon.demoUrl, 'temporal', 'viewer');
  await waitForMedia(page, 'py', 'the viewer');
  const result = await thinsAndRestores(page, 'py');
  const codec = await page.evaluate(async () => {
    const p = window.pylonDemo.room.remoteParticipants.get('py');
    for (const pub of p.trackPublications.values()) if (pub.kind === 'video') return pub.mimeType;
    return null;
  });
  assert.equal(codec?.toLowerCase(), 'video/vp9');
  console.log(`TEMPORAL_VP9 ${result}`);
  assert.deepEqual(page.problems, []);
  assert.ok(pylon.alive(), 'pylon is still running');
});
