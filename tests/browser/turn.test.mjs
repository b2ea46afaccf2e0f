// livekit-client in Chromium relaying through the node's embedded TURN server: the demo page
// connects with `rtcConfig: { iceTransportPolicy: 'relay' }` (livekit-client's own TURN check
// does the same) and no ICE servers of its own, so it uses the `turn:` server and the
// per-participant credential of the join response. Media flows both ways, every selected
// candidate pair is a relayed one, and so it stays after a resume (fresh credentials in the
// reconnect response).
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  assertSelected,
  dropSignalling,
  freeUdpPort,
  joinDemo,
  launchBrowser,
  newPage,
  recordPeerConnections,
  startPylon,
  SINGLE_PC,
  waitForMedia,
} from './lib.mjs';

test('a browser forced to relay goes through the embedded TURN server, and resumes through it', { timeout: 240000 }, async (t) => {
  const turnPort = await freeUdpPort();
  let config = `turn:\n  enabled: true\n  udp_port: ${turnPort}\n  relay_range_start: 31000\n  relay_range_end: 31999\n`;
  if (!SINGLE_PC) config += 'rtc:\n  single_peer_connection: false\n';
  const pylon = await startPylon('turn', { config });
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await pylon.stop();
  });
  const alice = await newPage(browser, 'alice');
  const bob = await newPage(browser, 'bob');
  for (const page of [alice, bob]) await recordPeerConnections(page);
  await joinDemo(alice, pylon.demoUrl, 'turn', 'alice', '?relay=1');
  await joinDemo(bob, pylon.demoUrl, 'turn', 'bob', '?relay=1');
  await waitForMedia(bob, 'alice', 'bob receiving alice through TURN');
  await waitForMedia(alice, 'bob', 'alice receiving bob through TURN');
  await assertSelected(alice, 'relay/udp', 'alice after joining');
  await assertSelected(bob, 'relay/udp', 'bob after joining');

  const sid = await dropSignalling(alice, 'alice');
  assert.equal(sid.after, sid.before, 'a full rejoin, not a resume');
  await waitForMedia(bob, 'alice', 'bob receiving alice after the resume');
  await waitForMedia(alice, 'bob', 'alice receiving bob after the resume');
  await assertSelected(alice, 'relay/udp', 'alice after the resume');
  const problems = [...alice.problems, ...bob.problems].filter((p) => !/WS closed unexpectedly with code 1006/.test(p));
  assert.deepEqual(problems, []);
});
