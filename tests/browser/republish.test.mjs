// livekit-client in Chromium: a track unpublished and published again and again (a screen share
// stopped and restarted) reaches another browser each time under its new SID, decoded, while
// that browser's subscriber connection reuses the media section of the track before instead of
// growing by one transceiver per track (LiveKit's transceiver reuse; Pylon rewrites the
// section's msid, which the SDK reads the track SID from). On `/rtc/v1` the browser's one
// connection takes a section per share instead (Pylon does not reuse them there:
// crates/core/src/single_pc.rs).
import test from 'node:test';
import assert from 'node:assert/strict';
import { SINGLE_PC, joinDemo, launchBrowser, newPage, startPylon, waitFor, waitForMedia } from './lib.mjs';

test('tracks published again and again reach a browser on recycled sections', { timeout: 180000 }, async (t) => {
  const pylon = await startPylon('republish');
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await pylon.stop();
  });
  const alice = await newPage(browser, 'alice');
  const bob = await newPage(browser, 'bob');
  await joinDemo(alice, pylon.demoUrl, 'republish', 'alice');
  await joinDemo(bob, pylon.demoUrl, 'republish', 'bob');
  await waitForMedia(bob, 'alice', 'bob receiving alice');
  await bob.evaluate(() => {
    window.subscribed = [];
    window.pylonDemo.room.on('trackSubscribed', (track, pub) => window.subscribed.push(pub.trackSid));
  });
  const transceivers = () =>
    bob.evaluate((single) => {
      const pcs = window.pylonDemo.room.engine.pcManager;
      return (single ? pcs.publisher : pcs.subscriber).getTransceivers().length;
    }, SINGLE_PC);
  const before = await transceivers();

  for (let i = 0; i < 5; i++) {
    const name = `share-${i}`;
    const sid = await alice.evaluate(async (name) => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 180 } });
      const pub = await window.pylonDemo.room.localParticipant.publishTrack(stream.getVideoTracks()[0], {
        name,
        source: 'screen_share',
        simulcast: false,
      });
      window.share = pub.track;
      return pub.trackSid;
    }, name);
    await waitFor(() => bob.evaluate((sid) => window.subscribed.includes(sid), sid), 20000, `bob to subscribe to ${name}`);
    await waitFor(
      () => bob.evaluate(async (sid) => {
        const pub = window.pylonDemo.room.remoteParticipants.get('alice')?.trackPublications.get(sid);
        const stats = pub?.track?.receiver ? await pub.track.receiver.getStats() : new Map();
        let decoded = 0;
        stats.forEach((s) => { if (s.type === 'inbound-rtp') decoded += s.framesDecoded ?? 0; });
        return decoded > 5;
      }, sid),
      20000,
      `bob to decode ${name}`,
    );
    await alice.evaluate(async () => {
      await window.pylonDemo.room.localParticipant.unpublishTrack(window.share);
    });
    await waitFor(
      () => bob.evaluate((sid) => !window.pylonDemo.room.remoteParticipants.get('alice')?.trackPublications.has(sid), sid),
      10000,
      `bob to see ${name} unpublished`,
    );
    // Let bob answer the offer that makes the section inactive: only then is it recycled.
    await new Promise((r) => setTimeout(r, 500));
  }
  // Without recycling, one more transceiver per share (5); with it, at most the one the shares
  // take turns on (and one more if a share came before bob's answer). Single PC: at most one
  // per share, fewer as the SDK's initial receive sections are used first.
  const after = await transceivers();
  assert.ok(after <= before + (SINGLE_PC ? 5 : 2), `bob's transceivers went from ${before} to ${after}`);
  await waitForMedia(bob, 'alice', "bob still receiving alice's camera and microphone");
  assert.deepEqual([...alice.problems, ...bob.problems], []);
});
