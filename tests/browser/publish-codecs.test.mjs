// livekit-client in Chromium publishing its camera with `videoCodec` set (the demo page's
// `?codec=`): the browser sends what it was asked for and another browser decodes it. The
// SDK offers every codec the browser has, VP8 first, and announces its choice in AddTrack;
// Pylon's answer puts the announced codec first, as LiveKit's does (crates/core/src/codec_order.rs).
// AV1 is the exception: Chromium sends it as spatial layers that a Chromium receiver decodes
// only with the dependency descriptor header extension, which Pylon does not negotiate, so the
// browser sends VP8 for it and subscribers decode that. Chromium's VP9 is one stream of spatial
// layers (SVC), of which a subscriber asking for LOW gets the lowest (crates/core/src/svc.rs).
import test from 'node:test';
import assert from 'node:assert/strict';
import { inbound, joinDemo, launchBrowser, newPage, startPylon, waitFor, waitForMedia } from './lib.mjs';

/** The mime type of the video `page` receives from `identity`, and the frames it decoded. */
function receivedVideo(page, identity) {
  return page.evaluate(async (identity) => {
    const p = window.pylonDemo.room.remoteParticipants.get(identity);
    const out = { mimeType: '', framesDecoded: 0 };
    for (const pub of p?.trackPublications.values() ?? []) {
      if (pub.kind !== 'video' || !pub.track?.receiver) continue;
      const stats = await pub.track.receiver.getStats();
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        out.framesDecoded += s.framesDecoded ?? 0;
        out.mimeType = stats.get(s.codecId)?.mimeType ?? out.mimeType;
      });
    }
    return out;
  }, identity);
}

test('a browser publishes the codec its application chose and another browser decodes it', { timeout: 240000 }, async (t) => {
  const pylon = await startPylon('publish-codecs');
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await pylon.stop();
  });
  const bob = await newPage(browser, 'bob');
  await joinDemo(bob, pylon.demoUrl, 'codecs', 'bob');
  for (const [codec, sent] of [['vp9', 'video/VP9'], ['h264', 'video/H264'], ['av1', 'video/VP8']]) {
    const name = `alice-${codec}`;
    const alice = await newPage(browser, name);
    await joinDemo(alice, pylon.demoUrl, 'codecs', name, `?codec=${codec}`);
    await waitForMedia(bob, name, `bob receiving ${name}`);
    let last = null;
    await waitFor(
      async () => {
        last = await receivedVideo(bob, name);
        return last.framesDecoded > 10 && last.mimeType !== '';
      },
      20000,
      `bob to decode ${name}'s camera`,
    );
    assert.equal(last.mimeType, sent, `${name}'s camera reaches bob as ${last.mimeType}`);
    if (codec === 'vp9') {
      // The 1280x720 camera's spatial layers are 320x180, 640x360 and 1280x720.
      await waitFor(async () => (await inbound(bob, name)).frameWidth === 1280, 20000, `bob to decode ${name} 1280 wide`);
      await bob.evaluate((name) => {
        const LK = window.LivekitClient;
        const pub = window.pylonDemo.room.remoteParticipants.get(name).getTrackPublication(LK.Track.Source.Camera);
        pub.setVideoQuality(LK.VideoQuality.LOW);
      }, name);
      await waitFor(async () => (await inbound(bob, name)).frameWidth === 320, 20000, `bob, asking for LOW, to decode ${name} 320 wide`);
    }
    assert.deepEqual(alice.problems, []);
    await alice.close();
  }
  assert.deepEqual(bob.problems, []);
  assert.ok(pylon.alive(), 'pylon is still running');
});
