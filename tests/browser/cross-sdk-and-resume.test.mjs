// A browser participant and a Python SDK participant (libwebrtc) see and hear each other; and a
// browser whose signalling WebSocket drops resumes with the same participant SID while media
// keeps flowing and the other side never sees it leave.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { dropSignalling, joinDemo, launchBrowser, newPage, pythonParticipant, startPylon, waitFor, waitForMedia } from './lib.mjs';

test('a browser and a Python SDK participant see and hear each other', { timeout: 180000 }, async (t) => {
  const pylon = await startPylon('cross-sdk');
  const browser = await launchBrowser();
  const py = await pythonParticipant(pylon, 'cross', 'py');
  t.after(async () => {
    await py.stop();
    await browser.close();
    await pylon.stop();
  });
  await waitFor(() => py.events.some((e) => e.event === 'connected'), 30000, 'the Python participant to connect');
  const page = await newPage(browser, 'web');
  await joinDemo(page, pylon.demoUrl, 'cross', 'web');
  await waitForMedia(page, 'py', 'the browser receiving the Python participant');
  await waitFor(
    () => py.frames('video', 'web') > 30 && py.frames('audio', 'web') > 50,
    45000,
    "the Python SDK decoding the browser's video and audio",
  ).catch((e) => {
    throw new Error(`${e.message}; last frames event: ${JSON.stringify(py.events.findLast((x) => x.event === 'frames'))}; events: ${JSON.stringify(py.events.map((x) => x.event))}`);
  });
  const before = py.frames('video', 'web');
  await waitFor(() => py.frames('video', 'web') > before + 15, 15000, "the browser's video to keep flowing");
  assert.deepEqual(page.problems, []);
});

test('a browser resumes after its signalling connection drops, with the same SID', { timeout: 180000 }, async (t) => {
  const pylon = await startPylon('resume');
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await pylon.stop();
  });
  const alice = await newPage(browser, 'alice');
  const bob = await newPage(browser, 'bob');
  await joinDemo(alice, pylon.demoUrl, 'resume', 'alice');
  await joinDemo(bob, pylon.demoUrl, 'resume', 'bob');
  await waitForMedia(bob, 'alice', 'bob receiving alice');
  await bob.evaluate(() => {
    window.leaves = [];
    window.pylonDemo.room.on('participantDisconnected', (p) => window.leaves.push(p.identity));
  });
  const sid = await dropSignalling(alice, 'alice');
  assert.equal(sid.after, sid.before, 'the participant SID changed: a full rejoin, not a resume');
  const log = fs.readFileSync(pylon.logPath, 'utf8');
  assert.match(log, /participant resumed/, 'the server never saw a resume (reconnect=1)');
  await waitForMedia(bob, 'alice', 'bob receiving alice after the resume');
  await waitForMedia(alice, 'bob', 'alice receiving bob after the resume');
  assert.deepEqual(await bob.evaluate(() => window.leaves), [], 'bob saw alice leave');
  // The simulated failure itself is logged by the SDK (the socket closed abnormally, 1006);
  // nothing else may be.
  const problems = [...alice.problems, ...bob.problems].filter((p) => !/WS closed unexpectedly with code 1006/.test(p));
  assert.deepEqual(problems, []);
});
