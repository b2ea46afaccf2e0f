// livekit-client in a Chromium that may not use UDP (the WebRTC IP-handling policy
// `disable_non_proxied_udp`, which enterprises set to the same effect as a firewall that
// blocks UDP): it connects over ICE/TCP to the server's `rtc.tcp_port`, media flows both ways,
// and a resume after a signalling drop (ICE restart) comes back over TCP too.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  assertSelected,
  dropSignalling,
  joinDemo,
  launchBrowser,
  newPage,
  recordPeerConnections,
  startPylon,
  waitForMedia,
} from './lib.mjs';

const NO_UDP = '--webrtc-ip-handling-policy=disable_non_proxied_udp';

test('without UDP a browser connects over ICE/TCP, and resumes over it', { timeout: 240000 }, async (t) => {
  const pylon = await startPylon('ice-tcp');
  const browser = await launchBrowser([NO_UDP]);
  t.after(async () => {
    await browser.close();
    await pylon.stop();
  });
  const alice = await newPage(browser, 'alice');
  const bob = await newPage(browser, 'bob');
  for (const page of [alice, bob]) await recordPeerConnections(page);
  await joinDemo(alice, pylon.demoUrl, 'tcp', 'alice');
  await joinDemo(bob, pylon.demoUrl, 'tcp', 'bob');
  await waitForMedia(bob, 'alice', 'bob receiving alice over TCP');
  await waitForMedia(alice, 'bob', 'alice receiving bob over TCP');
  await assertSelected(alice, '/tcp', 'alice after joining');
  await assertSelected(bob, '/tcp', 'bob after joining');

  // A signalling drop: the SDK resumes (same SID) and restarts ICE, again over TCP.
  const sid = await dropSignalling(alice, 'alice');
  assert.equal(sid.after, sid.before, 'a full rejoin, not a resume');
  await waitForMedia(bob, 'alice', 'bob receiving alice after the resume');
  await waitForMedia(alice, 'bob', 'alice receiving bob after the resume');
  await assertSelected(alice, '/tcp', 'alice after the resume');
  const problems = [...alice.problems, ...bob.problems].filter((p) => !/WS closed unexpectedly with code 1006/.test(p));
  assert.deepEqual(problems, []);
});
