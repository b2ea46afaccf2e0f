// Congestion control thins a VP9 SVC stream to what a narrow link carries: a Chromium viewer
// of a Python SDK camera (VP9, three spatial layers in one stream, L3T3_KEY) behind a
// 400 kbit/s link gets a lower spatial layer and keeps decoding, and climbs back to the top
// layer when the limit goes. The allocator prices each spatial layer with the layers below it
// (`allocator::SpatialShares`). Chromium is the receiver because libwebrtc's Python SDK
// freezes on VP9 SVC after repeated key pictures without the dependency descriptor (issue
// notes); Chromium decodes it.
import test from 'node:test';
import assert from 'node:assert/strict';
import { SINGLE_PC, inbound, joinDemo, launchBrowser, newPage, pythonParticipant, recordPeerConnections, selectedCandidates, sleep, startPylon, waitFor, waitForMedia } from './lib.mjs';
import { isRoot, serverNamespace } from './netns.mjs';

const localPorts = async (page) => [...new Set((await selectedCandidates(page)).filter((c) => c.protocol === 'udp').map((c) => c.port))];

test('behind 400 kbit/s a VP9 SVC viewer gets a lower spatial layer, keeps decoding and climbs back', { skip: !isRoot() && 'needs root (a network namespace and tc)', timeout: 240000 }, async (t) => {
  const netns = serverNamespace('svc');
  t.after(() => netns.remove());
  const config = [
    'rtc:',
    '  congestion_control:',
    '    enabled: true',
    ...(SINGLE_PC ? [] : ['  single_peer_connection: false']),
    '',
  ].join('\n');
  const pylon = await startPylon('svc-bandwidth', { config, netns });
  t.after(() => pylon.stop());
  // Faint noise: the whole stream needs about 1.3 Mbit/s, its lowest spatial layer about 150.
  const py = await pythonParticipant(pylon, 'svc', 'py', ['--video-size', '1280x720', '--codec', 'VP9', '--noise']);
  t.after(() => py.stop());
  const browser = await launchBrowser([`--unsafely-treat-insecure-origin-as-secure=http://${netns.host}:${pylon.httpPort}`]);
  t.after(() => browser.close());
  await waitFor(() => py.events.some((e) => e.event === 'connected'), 30000, 'the Python participant to connect');

  const page = await newPage(browser, 'viewer');
  await recordPeerConnections(page);
  await joinDemo(page, pylon.demoUrl, 'svc', 'viewer');
  await waitForMedia(page, 'py', 'the viewer');
  await waitFor(async () => (await inbound(page, 'py')).frameWidth === 1280, 60000, 'the viewer to decode 1280 wide before the limit');
  const ports = await localPorts(page);
  assert.ok(ports.length > 0, "the viewer's peer connections have no selected UDP candidate");

  netns.limit(400, ports);
  try {
    await waitFor(async () => (await inbound(page, 'py')).frameWidth < 1280, 30000, 'the viewer to move to a lower spatial layer');
    // Settled: it decodes (a lower layer, at least 10 frames a second) and hears its audio.
    await sleep(6000);
    const a = await inbound(page, 'py');
    await sleep(6000);
    const b = await inbound(page, 'py');
    const frames = b.framesDecoded - a.framesDecoded;
    console.log(`SVC_400 width=${b.frameWidth} frames=${frames} audio_bytes=${b.audioBytes - a.audioBytes} in 6 s`);
    // In the window: frames that arrived, key frames decoded, video packets lost, PLIs and
    // NACKs sent (a stall with frames arriving and no key frame points at the forwarder; one
    // without frames, at the link or the allocator).
    const d = (k) => b[k] - a[k];
    console.log(`SVC_400 received=${d('framesReceived')} key_frames=${d('keyFramesDecoded')} lost=${d('videoPacketsLost')} plis=${d('pliCount')} nacks=${d('nackCount')}`);
    assert.ok([320, 640].includes(b.frameWidth), `the viewer decodes ${b.frameWidth} wide behind 400 kbit/s`);
    assert.ok(frames >= 60, `the viewer decoded ${frames} frames in 6 s behind 400 kbit/s`);
    assert.ok(b.audioBytes - a.audioBytes > 6 * 2000, `the viewer's audio stalled (${b.audioBytes - a.audioBytes} bytes in 6 s)`);
  } finally {
    netns.lift();
  }
  await waitFor(async () => (await inbound(page, 'py')).frameWidth === 1280, 60000, 'the viewer to climb back to 1280 wide');
  assert.deepEqual(page.problems, []);
  assert.ok(pylon.alive(), 'pylon is still running');
});
