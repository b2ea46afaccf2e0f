// livekit-client (2.23.0, which has data tracks) in Chromium receives a data track a Python SDK
// participant publishes: frames in order, with their payloads and user timestamps.
import test from 'node:test';
import assert from 'node:assert/strict';
import { joinDemo, launchBrowser, newPage, pythonParticipant, startPylon, waitFor } from './lib.mjs';

test('a browser receives a data track published by the Python SDK', { timeout: 120000 }, async (t) => {
  const pylon = await startPylon('data-tracks');
  const browser = await launchBrowser();
  const py = await pythonParticipant(pylon, 'data', 'py', ['--data-track', 'telemetry']);
  t.after(async () => {
    await py.stop();
    await browser.close();
    await pylon.stop();
  });
  await waitFor(() => py.events.some((e) => e.event === 'data_track_published'), 30000, 'the Python participant to publish');
  const page = await newPage(browser, 'web');
  await joinDemo(page, pylon.demoUrl, 'data', 'web');
  const frames = await page.evaluate(async () => {
    const room = window.pylonDemo.room;
    const track = await room.remoteParticipants.get('py').dataTracks.getDeferred('telemetry');
    const reader = track.subscribe().getReader();
    const out = [];
    while (out.length < 20) {
      const { value, done } = await reader.read();
      if (done) break;
      out.push({ payload: new TextDecoder().decode(value.payload), ts: String(value.userTimestamp) });
    }
    reader.cancel();
    return { out, sid: track.info.sid };
  });
  assert.ok(frames.sid.startsWith('DTR_'), frames.sid);
  assert.equal(frames.out.length, 20);
  const numbers = frames.out.map((f) => Number(f.payload));
  // In order (the channel is unordered and lossy by design, so order is the server's doing:
  // it forwards each packet as it comes, on loopback nothing is reordered or lost in practice).
  for (let i = 1; i < numbers.length; i++) assert.ok(numbers[i] > numbers[i - 1], `in order: ${numbers}`);
  for (const f of frames.out) assert.equal(f.ts, f.payload, 'the user timestamp travels with its frame');
  assert.deepEqual(page.problems, []);
});
