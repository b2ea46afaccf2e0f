// livekit-client with default options against a server that serves `/rtc/v1`: each browser
// joins with one RTCPeerConnection, publishes its camera and microphone and receives the
// other's and a Python SDK participant's (single-PC too), and resumes over `/rtc/v1` after its
// signalling connection drops. No 404 from a fallback is logged.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  dropSignalling,
  joinDemo,
  launchBrowser,
  newPage,
  pythonParticipant,
  recordPeerConnections,
  startPylon,
  waitFor,
  waitForMedia,
} from './lib.mjs';

const SINGLE_PC = 'rtc:\n  single_peer_connection: true\n';

/** The page's peer connections that are not closed. */
const openPeerConnections = (page) => page.evaluate(() => window.pcs.filter((pc) => pc.connectionState !== 'closed').length);

test('browsers join /rtc/v1 with one peer connection each, exchange media and resume', { timeout: 240000 }, async (t) => {
  const pylon = await startPylon('single-pc', { config: SINGLE_PC });
  const browser = await launchBrowser();
  const py = await pythonParticipant(pylon, 'single', 'py');
  t.after(async () => {
    await py.stop();
    await browser.close();
    await pylon.stop();
  });
  const alice = await newPage(browser, 'alice');
  const bob = await newPage(browser, 'bob');
  const sockets = [];
  for (const page of [alice, bob]) {
    await recordPeerConnections(page);
    page.on('websocket', (ws) => sockets.push(new URL(ws.url()).pathname));
  }
  await joinDemo(alice, pylon.demoUrl, 'single', 'alice');
  await joinDemo(bob, pylon.demoUrl, 'single', 'bob');
  await waitForMedia(bob, 'alice', 'bob receiving alice');
  await waitForMedia(alice, 'bob', 'alice receiving bob');
  await waitForMedia(alice, 'py', 'alice receiving the Python participant');
  await waitFor(() => py.frames('video', 'alice') > 30 && py.frames('audio', 'alice') > 50, 45000, "the Python SDK decoding alice's media");
  assert.deepEqual(sockets, ['/rtc/v1', '/rtc/v1'], 'both browsers signal on /rtc/v1 and nothing else');
  assert.equal(await openPeerConnections(alice), 1, 'alice has one peer connection');
  assert.equal(await openPeerConnections(bob), 1, 'bob has one peer connection');

  const sid = await dropSignalling(alice, 'alice');
  assert.equal(sid.after, sid.before, 'the participant SID changed: a full rejoin, not a resume');
  assert.match(fs.readFileSync(pylon.logPath, 'utf8'), /participant resumed/, 'the server never saw a resume');
  assert.deepEqual(sockets.slice(2), ['/rtc/v1'], 'the resume is on /rtc/v1');
  await waitForMedia(bob, 'alice', 'bob receiving alice after the resume');
  await waitForMedia(alice, 'bob', 'alice receiving bob after the resume');
  assert.equal(await openPeerConnections(alice), 1, 'alice still has one peer connection');
  // The simulated failure itself is logged by the SDK (the socket closed abnormally, 1006).
  const problems = [...alice.problems, ...bob.problems].filter((p) => !/WS closed unexpectedly with code 1006/.test(p));
  assert.deepEqual(problems, []);
  assert.deepEqual([...alice.excused, ...bob.excused], [], 'no /rtc/v1 404 to excuse');
});
