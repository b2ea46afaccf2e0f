// Shared pieces of the browser tests: a `pylon serve --dev` on free loopback ports, Debian's
// Chromium driven by playwright-core (never a downloaded browser), and page probes that read
// what livekit-client and WebRTC report.
import { spawn } from 'node:child_process';
import fs, { createWriteStream, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { AccessToken } from 'livekit-server-sdk';
import { chromium } from 'playwright-core';
import { freeTcpPort, freeUdpPort } from '../node/pylon.mjs';

export { freeUdpPort };

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const OUTPUT = path.join(ROOT, 'test-output', 'browser');
mkdirSync(OUTPUT, { recursive: true });

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

/**
 * Whether the servers this run starts serve `/rtc/v1`, so livekit-client joins with one peer
 * connection (the default); `PYLON_TEST_SINGLE_PC=0` turns it off and the SDK falls back to
 * `/rtc` and two.
 */
export const SINGLE_PC = process.env.PYLON_TEST_SINGLE_PC !== '0';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(200);
  }
}

/**
 * `pylon serve --dev` (demo page and token minting on) on free ports; its log in OUTPUT.
 * `config` is YAML for `--config` (e.g. `rtc:\n  single_peer_connection: true\n`).
 */
export async function startPylon(name, { config, netns } = {}) {
  // `PYLON_TEST_SINGLE_PC=0` (scripts/test.sh) turns `/rtc/v1` off: the SDK falls back to `/rtc`.
  if (!config && process.env.PYLON_TEST_SINGLE_PC === '0') config = 'rtc:\n  single_peer_connection: false\n';
  const bin = process.env.PYLON_BIN ?? path.join(ROOT, 'target', 'debug', 'pylon');
  const httpPort = await freeTcpPort();
  const udpPort = await freeUdpPort();
  const tcpPort = await freeTcpPort();
  const logPath = path.join(OUTPUT, `${name}.log`);
  const log = createWriteStream(logPath);
  const args = ['serve', '--dev', '--port', String(httpPort), '--udp-port', String(udpPort), '--tcp-port', String(tcpPort)];
  // In a network namespace (`netns`: { name, host }, see netns.mjs), listening on its address.
  const host = netns?.host ?? '127.0.0.1';
  if (netns) args.push('--bind', host, '--node-ip', host);
  if (config) {
    const configPath = path.join(OUTPUT, `${name}.yaml`);
    fs.writeFileSync(configPath, config);
    args.push('--config', configPath);
  }
  const command = netns ? ['ip', ['netns', 'exec', netns.name, bin, ...args]] : [bin, args];
  const child = spawn(...command, {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  let exited = null;
  child.on('exit', (code, signal) => { exited = code ?? signal; });
  await waitFor(
    () =>
      new Promise((resolve) => {
        if (exited !== null) throw new Error(`pylon exited (${exited}); see ${logPath}`);
        const s = net.connect(httpPort, host, () => { s.destroy(); resolve(true); });
        s.on('error', () => resolve(false));
      }),
    20000,
    'pylon to listen',
  );
  return {
    httpPort,
    url: `ws://${host}:${httpPort}`,
    demoUrl: `http://${host}:${httpPort}/demo/`,
    logPath,
    alive: () => exited === null,
    stop: async () => {
      if (exited === null) {
        // SIGTERM drains, which waits while someone is still hosted; a second SIGTERM after a
        // moment exits at once (the test is over), and SIGKILL if even that is not heard.
        child.kill('SIGTERM');
        await waitFor(() => exited !== null, 1000, 'pylon to drain').catch(() => child.kill('SIGTERM'));
        await waitFor(() => exited !== null, 10000, 'pylon to stop').catch(() => child.kill('SIGKILL'));
      }
    },
  };
}

/** Debian's Chromium, headless; `extraArgs` are added to the usual switches. */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: [...CHROMIUM_ARGS, ...extraArgs] });
}

/**
 * Keep every RTCPeerConnection the page creates in `window.pcs` (call before the page loads):
 * tests count them and read their transports.
 */
export async function recordPeerConnections(page) {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    window.pcs = [];
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        window.pcs.push(this);
      }
    };
  });
}

/**
 * For each open peer connection of a page prepared by `recordPeerConnections`: the protocol
 * (`udp`/`tcp`), type and port of the local candidate of its selected candidate pair.
 */
export function selectedCandidates(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.pcs) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
        const local = stats.get(stats.get(s.selectedCandidatePairId)?.localCandidateId);
        out.push({ protocol: local?.protocol, type: local?.candidateType, port: local?.port, state: pc.connectionState });
      });
    }
    return out;
  });
}

/**
 * Every open peer connection of `page` (one on `/rtc/v1`; two, publisher and subscriber, on
 * `/rtc`) has selected a candidate pair whose local candidate is `want` (`type/protocol`, e.g.
 * `host/tcp`, `relay/udp`); `what` names the page and the moment in the failure message.
 */
export async function assertSelected(page, want, what) {
  const count = SINGLE_PC ? 1 : 2;
  const selected = await waitFor(async () => {
    const s = await selectedCandidates(page);
    return s.length === count ? s : null;
  }, 20000, `${what}: ${count} peer connection(s) to select a candidate pair`);
  const got = selected.map((c) => `${c.type}/${c.protocol}`);
  if (!got.every((g) => g.endsWith(want))) {
    throw new Error(`${what}: selected local candidates ${JSON.stringify(selected)}, want ${want}`);
  }
}

/**
 * Alice and bob join `room` on the demo page (with `query`) and receive each other; every
 * selected candidate pair of both is `want` (see assertSelected); then alice's signalling drops
 * and she resumes (same SID), media flows both ways again and her pairs are still `want`. No page
 * logs a problem but the dropped WebSocket's 1006.
 */
export async function callBothWaysAndResume(browser, pylon, room, query, want, how) {
  const alice = await newPage(browser, 'alice');
  const bob = await newPage(browser, 'bob');
  for (const page of [alice, bob]) await recordPeerConnections(page);
  await joinDemo(alice, pylon.demoUrl, room, 'alice', query);
  await joinDemo(bob, pylon.demoUrl, room, 'bob', query);
  await waitForMedia(bob, 'alice', `bob receiving alice ${how}`);
  await waitForMedia(alice, 'bob', `alice receiving bob ${how}`);
  await assertSelected(alice, want, 'alice after joining');
  await assertSelected(bob, want, 'bob after joining');
  const sid = await dropSignalling(alice, 'alice');
  if (sid.after !== sid.before) throw new Error(`a full rejoin, not a resume: ${JSON.stringify(sid)}`);
  await waitForMedia(bob, 'alice', 'bob receiving alice after the resume');
  await waitForMedia(alice, 'bob', 'alice receiving bob after the resume');
  await assertSelected(alice, want, 'alice after the resume');
  const problems = [...alice.problems, ...bob.problems].filter((p) => !/WS closed unexpectedly with code 1006/.test(p));
  if (problems.length) throw new Error(`pages logged problems: ${JSON.stringify(problems)}`);
}

/**
 * Chromium's own network messages for the single-PC probe when `/rtc/v1` is off: livekit-client
 * first tries `/rtc/v1` and its validate endpoint, Pylon answers 404, and the SDK falls back to
 * `/rtc`. Chromium logs those 404s itself; they are not SDK errors. They are excused only in the
 * run with `/rtc/v1` off (`PYLON_TEST_SINGLE_PC=0`), and nothing else is (`page.excused` keeps
 * them: a single-PC test expects none).
 */
export function isV1FallbackNoise(text, url = '') {
  return (
    (/^Failed to load resource: the server responded with a status of 404/.test(text) && /\/rtc\/v1(\/validate)?\?/.test(url)) ||
    /^WebSocket connection to 'ws:\/\/[^']*\/rtc\/v1\?[^']*' failed: Error during WebSocket handshake: Unexpected response code: 404$/.test(text)
  );
}

/**
 * A page that records console errors and page errors (checked at the end of a test);
 * `contextOptions` are playwright's (a `userAgent`, say).
 */
export async function newPage(browser, label, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...contextOptions });
  const page = await context.newPage();
  page.problems = [];
  page.excused = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const line = `${label} console: ${m.text()} (${m.location()?.url ?? ''})`;
    const excused = process.env.PYLON_TEST_SINGLE_PC === '0' && isV1FallbackNoise(m.text(), m.location()?.url);
    (excused ? page.excused : page.problems).push(line);
  });
  page.on('pageerror', (e) => page.problems.push(`${label} pageerror: ${e.message}`));
  return page;
}

/**
 * Drop the page's signalling WebSocket as a network failure would (the SDK's own
 * `simulateScenario('signal-reconnect')`) and wait for the SDK to report it reconnected;
 * returns the participant SID before and after (equal for a resume, not a full rejoin).
 */
export async function dropSignalling(page, who) {
  const before = await page.evaluate(() => window.pylonDemo.room.localParticipant.sid);
  await page.evaluate(() => {
    window.resumed = false;
    window.pylonDemo.room.on('reconnected', () => { window.resumed = true; });
    return window.pylonDemo.room.simulateScenario('signal-reconnect');
  });
  await waitFor(() => page.evaluate(() => window.resumed), 30000, `${who} to report it reconnected`);
  const after = await page.evaluate(() => window.pylonDemo.room.localParticipant.sid);
  return { before, after };
}

/** Join through the demo page's form. */
export async function joinDemo(page, demoUrl, room, name, query = '') {
  await page.goto(demoUrl + query);
  await page.fill('#room', room);
  await page.fill('#name', name);
  await page.click('#join');
  await page.waitForFunction(() => window.pylonDemo?.room?.state === 'connected', null, { timeout: 30000 });
}

/**
 * What this page receives from `identity`: decoded video frames, the width of the last one,
 * audio bytes, samples (and how many were concealed) and level (from the receivers' WebRTC
 * stats), and whether its tile's <video> is playing with real dimensions.
 */
export function inbound(page, identity) {
  return page.evaluate(async (identity) => {
    const room = window.pylonDemo.room;
    const p = room?.remoteParticipants.get(identity);
    const out = {
      present: !!p,
      framesDecoded: 0,
      frameWidth: 0,
      audioBytes: 0,
      audioSamples: 0,
      audioConcealed: 0,
      audioLevel: 0,
      videoWidth: 0,
      currentTime: 0,
      // For failure reports: what the video receiver got and asked for.
      framesReceived: 0,
      keyFramesDecoded: 0,
      videoPacketsLost: 0,
      pliCount: 0,
      nackCount: 0,
    };
    if (!p) return out;
    for (const pub of p.trackPublications.values()) {
      const receiver = pub.track?.receiver;
      if (!receiver) continue;
      const stats = await receiver.getStats();
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          out.framesDecoded += s.framesDecoded ?? 0;
          out.frameWidth = s.frameWidth ?? 0;
          out.framesReceived += s.framesReceived ?? 0;
          out.keyFramesDecoded += s.keyFramesDecoded ?? 0;
          out.videoPacketsLost += s.packetsLost ?? 0;
          out.pliCount += s.pliCount ?? 0;
          out.nackCount += s.nackCount ?? 0;
        }
        if (s.kind === 'audio') {
          out.audioBytes += s.bytesReceived ?? 0;
          out.audioSamples += s.totalSamplesReceived ?? 0;
          out.audioConcealed += s.concealedSamples ?? 0;
          out.audioLevel = Math.max(out.audioLevel, s.audioLevel ?? 0);
        }
      });
    }
    const video = document.querySelector(`#tile-${CSS.escape(identity)} video`);
    if (video) {
      out.videoWidth = video.videoWidth;
      out.currentTime = video.currentTime;
    }
    return out;
  }, identity);
}

/** Ask for `fps` frames a second of every video `identity` publishes (livekit-client's
 * `RemoteTrackPublication.setVideoFPS`: UpdateTrackSettings.fps). */
export function setVideoFps(page, identity, fps) {
  return page.evaluate(
    ([identity, fps]) => {
      const p = window.pylonDemo.room.remoteParticipants.get(identity);
      for (const pub of p.trackPublications.values()) {
        if (pub.kind === 'video') pub.setVideoFPS(fps);
      }
    },
    [identity, fps],
  );
}

/** Wait until `page` decodes `identity`'s video and receives its audio, both still rising. */
export async function waitForMedia(page, identity, what) {
  const first = await waitFor(async () => {
    const s = await inbound(page, identity);
    return s.framesDecoded > 10 && s.audioBytes > 1000 && s.videoWidth > 0 ? s : null;
  }, 45000, `${what}: video decoding and audio arriving`);
  await waitFor(async () => {
    const s = await inbound(page, identity);
    return s.framesDecoded > first.framesDecoded + 10 && s.audioBytes > first.audioBytes && s.currentTime > first.currentTime;
  }, 20000, `${what}: frames and audio to keep rising`);
}

const PYTHON = path.join(ROOT, '.venv', 'bin', 'python');
const PARTICIPANT = path.join(ROOT, 'tests', 'node', 'participant.py');

/**
 * The Python SDK participant of tests/node/participant.py (publishing its generated camera and
 * microphone; `extraArgs` such as `['--video-size', '1280x720']`), printing JSON events.
 */
export async function pythonParticipant(pylon, room, identity, extraArgs = []) {
  const at = new AccessToken('devkey', 'secret', { identity });
  at.addGrant({ roomJoin: true, room });
  const token = await at.toJwt();
  const err = fs.openSync(path.join(OUTPUT, `${identity}.stderr`), 'w');
  const proc = spawn(PYTHON, [PARTICIPANT, '--url', pylon.url, '--token', token, '--identity', identity, '--publish', ...extraArgs], {
    stdio: ['pipe', 'pipe', err],
  });
  fs.closeSync(err);
  const events = [];
  readline.createInterface({ input: proc.stdout }).on('line', (l) => {
    try { events.push(JSON.parse(l)); } catch { /* not ours */ }
  });
  // Frames of `kind` from `identity`, whatever its tracks are named (livekit-client publishes
  // the camera and microphone with empty names).
  const frames = (kind, identity) => {
    const last = events.findLast((e) => e.event === 'frames');
    return Object.entries(last?.[kind] ?? {})
      .filter(([key]) => key.startsWith(`${identity}/`))
      .reduce((sum, [, n]) => sum + n, 0);
  };
  return {
    events,
    frames,
    stop: async () => {
      proc.stdin.end('quit\n');
      await Promise.race([new Promise((r) => proc.on('exit', r)), new Promise((r) => setTimeout(r, 10000))]);
      proc.kill('SIGKILL');
    },
  };
}
