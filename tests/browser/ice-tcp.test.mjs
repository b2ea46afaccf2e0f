// livekit-client in a Chromium that may not use UDP (the WebRTC IP-handling policy
// `disable_non_proxied_udp`, which enterprises set to the same effect as a firewall that
// blocks UDP): it connects over ICE/TCP to the server's `rtc.tcp_port`, media flows both ways,
// and a resume after a signalling drop (ICE restart) comes back over TCP too.
import test from 'node:test';
import {
  callBothWaysAndResume,
  launchBrowser,
  startPylon,
} from './lib.mjs';

const NO_UDP = '--webrtc-ip-handling-policy=disable_non_proxied_udp';

test('without UDP a browser connects over ICE/TCP, and resumes over it', { timeout: 240000 }, async (t) => {
  const pylon = await startPylon('ice-tcp');
  const browser = await launchBrowser([NO_UDP]);
  t.after(async () => {
    await browser.close();
    await pylon.stop();
  });
  // A signalling drop on the way: the SDK resumes (same SID) and restarts ICE, again over TCP.
  await callBothWaysAndResume(browser, pylon, 'tcp', '', '/tcp', 'over TCP');
});
