// livekit-client in Chromium relaying through the node's embedded TURN server: the demo page
// connects with `rtcConfig: { iceTransportPolicy: 'relay' }` (livekit-client's own TURN check
// does the same) and no ICE servers of its own, so it uses the `turn:` server and the
// per-participant credential of the join response. Media flows both ways, every selected
// candidate pair is a relayed one, and so it stays after a resume (fresh credentials in the
// reconnect response).
import test from 'node:test';
import {
  callBothWaysAndResume,
  freeUdpPort,
  launchBrowser,
  SINGLE_PC,
  startPylon,
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
  await callBothWaysAndResume(browser, pylon, 'turn', '?relay=1', 'relay/udp', 'through TURN');
});
