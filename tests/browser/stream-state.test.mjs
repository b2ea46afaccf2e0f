// livekit-client is told when the server pauses a video for bandwidth, and when it resumes it
// (StreamStateUpdate → RoomEvent.TrackStreamStateChanged, `Track.StreamState` 'paused' and
// 'active'): a Chromium viewer behind a 150 kbit/s link, with `congestion_control.allow_pause`,
// of a Python SDK camera whose low layer does not fit beside the audio. The viewer keeps
// receiving audio while the video is paused, and decodes video again when the limit goes.
// The server runs in a network namespace of the test's own (netns.mjs), so the limit narrows
// what it sends to the viewer's ports and nothing else.
import test from 'node:test';
import assert from 'node:assert/strict';
import { SINGLE_PC, inbound, joinDemo, launchBrowser, newPage, pythonParticipant, recordPeerConnections, selectedCandidates, sleep, startPylon, waitFor, waitForMedia } from './lib.mjs';
import { isRoot, serverNamespace } from './netns.mjs';

/** The local UDP ports of the page's peer connections' selected candidate pairs. */
const localPorts = async (page) => [...new Set((await selectedCandidates(page)).filter((c) => c.protocol === 'udp').map((c) => c.port))];

/** Video frames `page` decodes of `identity` in `ms`. */
async function decodedIn(page, identity, ms) {
  const a = await inbound(page, identity);
  await sleep(ms);
  return (await inbound(page, identity)).framesDecoded - a.framesDecoded;
}

/** The stream states the page was told for `identity`'s video, in order. */
const videoStates = (page, identity) =>
  page.evaluate((identity) => window.streamStates.filter((s) => s.identity === identity && s.kind === 'video').map((s) => s.state), identity);

test('a video paused for bandwidth and resumed raises TrackStreamStateChanged in livekit-client', { skip: !isRoot() && 'needs root (a network namespace and tc)', timeout: 240000 }, async (t) => {
  const netns = serverNamespace('ss');
  t.after(() => netns.remove());
  const config = [
    'rtc:',
    '  congestion_control:',
    '    enabled: true',
    '    allow_pause: true',
    ...(SINGLE_PC ? [] : ['  single_peer_connection: false']),
    '',
  ].join('\n');
  const pylon = await startPylon('stream-state', { config, netns });
  t.after(() => pylon.stop());
  // Faint noise: every layer near its bitrate, so the low layer (about 130 kbit/s) does not
  // fit beside the audio (Opus with RED, about 100 kbit/s on the wire) in 150 kbit/s.
  const py = await pythonParticipant(pylon, 'stream-state', 'py', ['--video-size', '640x360', '--noise']);
  t.after(() => py.stop());
  // The demo page publishes a camera: its origin (not loopback) must count as secure.
  const browser = await launchBrowser([`--unsafely-treat-insecure-origin-as-secure=http://${netns.host}:${pylon.httpPort}`]);
  t.after(() => browser.close());
  await waitFor(() => py.events.some((e) => e.event === 'connected'), 30000, 'the Python participant to connect');

  const page = await newPage(browser, 'viewer');
  await recordPeerConnections(page);
  await joinDemo(page, pylon.demoUrl, 'stream-state', 'viewer');
  await page.evaluate(() => {
    window.streamStates = [];
    window.pylonDemo.room.on('trackStreamStateChanged', (pub, state, participant) => {
      window.streamStates.push({ identity: participant.identity, kind: pub.kind, state });
    });
  });
  await waitForMedia(page, 'py', 'the viewer');
  // str0m's estimate starts low, and with allow_pause a video may be paused for a few seconds
  // after joining even on loopback: wait until the viewer decodes steadily, and count only the
  // states told from the limit on.
  await waitFor(async () => (await decodedIn(page, 'py', 2000)) > 20, 60000, 'the viewer to decode steadily before the limit');
  const ports = await localPorts(page);
  assert.ok(ports.length > 0, "the viewer's peer connections have no selected UDP candidate");

  await page.evaluate(() => { window.streamStates.length = 0; });
  netns.limit(150, ports);
  try {
    await waitFor(async () => (await videoStates(page, 'py')).includes('paused'), 40000, "the viewer to be told py's video is paused").catch(async (e) => {
      throw new Error(`${e.message}; states: ${JSON.stringify(await videoStates(page, 'py'))}`);
    });
    // Paused: no more video frames, and the audio goes on.
    await sleep(2000);
    const a = await inbound(page, 'py');
    await sleep(4000);
    const b = await inbound(page, 'py');
    console.log(`STREAM_STATE paused: ${b.framesDecoded - a.framesDecoded} frames, ${b.audioBytes - a.audioBytes} audio bytes in 4 s`);
    assert.ok(b.framesDecoded - a.framesDecoded < 10, `the viewer still decodes py's video behind 150 kbit/s (${b.framesDecoded - a.framesDecoded} frames in 4 s)`);
    assert.ok(b.audioBytes - a.audioBytes > 4 * 2000, `the viewer's audio stopped with its video (${b.audioBytes - a.audioBytes} bytes in 4 s)`);
  } finally {
    netns.lift();
  }
  // The link is back: told 'active' after 'paused', and decoding again.
  await waitFor(async () => {
    const s = await videoStates(page, 'py');
    return s.lastIndexOf('active') > s.indexOf('paused');
  }, 60000, "the viewer to be told py's video is active again").catch(async (e) => {
    throw new Error(`${e.message}; states: ${JSON.stringify(await videoStates(page, 'py'))}`);
  });
  // The estimate climbs back from the paused link's with audio and padding only, so the video
  // may be resumed and paused again a few times first (more so on a loaded machine).
  await waitFor(async () => (await decodedIn(page, 'py', 2000)) > 10, 60000, 'the viewer to decode py again after the limit is lifted');
  console.log(`STREAM_STATE states: ${JSON.stringify(await videoStates(page, 'py'))}`);
  assert.deepEqual(page.problems, []);
  assert.ok(pylon.alive(), 'pylon is still running');
});
