// Redundant audio (RFC 2198 RED): the Python SDK publishes its microphone as RED (libwebrtc
// does once the server's answer lists RED first). A Chromium subscriber negotiates RED and
// gets the packets as sent; a client that says it is Firefox is offered no RED, as LiveKit's
// server does, and gets the primary Opus blocks. Both hear the tone.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { inbound, joinDemo, launchBrowser, newPage, pythonParticipant, recordPeerConnections, startPylon, waitFor } from './lib.mjs';

const FIREFOX_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0';

/**
 * Whether the server's descriptions to the page offered RED for audio: its offers to the
 * subscriber connection (`/rtc`), its answers on the one connection (`/rtc/v1`).
 */
function offeredRed(page) {
  return page.evaluate(() =>
    window.pcs.some((pc) => /a=rtpmap:\d+ red\/48000/.test(pc.remoteDescription?.sdp ?? '')),
  );
}

test('RED reaches a RED subscriber as sent and a Firefox one as Opus; both hear the tone', { timeout: 180000 }, async (t) => {
  const pylon = await startPylon('red');
  const browser = await launchBrowser();
  const py = await pythonParticipant(pylon, 'red', 'py');
  t.after(async () => {
    await py.stop();
    await browser.close();
    await pylon.stop();
  });
  await waitFor(() => py.events.some((e) => e.event === 'connected'), 30000, 'the Python participant to connect');
  const chrome = await newPage(browser, 'chrome');
  const firefox = await newPage(browser, 'firefox', { userAgent: FIREFOX_UA });
  for (const page of [chrome, firefox]) await recordPeerConnections(page);
  await joinDemo(chrome, pylon.demoUrl, 'red', 'chrome');
  await joinDemo(firefox, pylon.demoUrl, 'red', 'firefox');
  assert.equal(await firefox.evaluate(() => navigator.userAgent.includes('Firefox')), true);

  for (const [page, who] of [[chrome, 'chrome'], [firefox, 'firefox']]) {
    const first = await waitFor(async () => {
      const a = await inbound(page, 'py');
      return a.audioSamples > 48000 ? a : null;
    }, 45000, `${who} receiving the Python participant's audio`);
    // The tone (amplitude 12000 of 32767) plays at a level near 0.37; silence or garbage
    // decoded from mangled packets would not.
    const heard = await waitFor(async () => {
      const a = await inbound(page, 'py');
      return a.audioSamples > first.audioSamples + 48000 && a.audioLevel > 0.2 ? a : null;
    }, 20000, `${who} hearing the tone`);
    const concealed = (heard.audioConcealed - first.audioConcealed) / (heard.audioSamples - first.audioSamples);
    assert.ok(concealed < 0.2, `${who} concealed ${(concealed * 100).toFixed(0)} % of the samples`);
  }
  assert.equal(await offeredRed(chrome), true, 'Chromium was not offered RED');
  assert.equal(await offeredRed(firefox), false, 'a Firefox client was offered RED');
  // The Python SDK's microphone did arrive as RED (the server logs each track's first media).
  const log = fs.readFileSync(pylon.logPath, 'utf8');
  assert.match(log, /first media of a published track.*codec=Some\(Opus\) red=true/);
  assert.deepEqual([...chrome.problems, ...firefox.problems], []);
});
