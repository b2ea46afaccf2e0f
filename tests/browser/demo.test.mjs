// Two browser participants (real Chromium, livekit-client at its default options) through the
// demo page served by Pylon: media both ways, chat over the data channel, mute/unmute seen by
// the other side, a reload that rejoins cleanly, a closed tab that leaves — and no console
// errors along the way. Saves a screenshot of the page with two participants.
import test from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { OUTPUT, joinDemo, launchBrowser, newPage, startPylon, waitFor, waitForMedia, inbound } from './lib.mjs';

const ROOM = 'browser-demo';

const remoteTile = (page, identity) =>
  page.evaluate((id) => {
    const t = document.getElementById(`tile-${id}`);
    return t ? { cameraMuted: t.dataset.cameraMuted, micMuted: t.dataset.micMuted } : null;
  }, identity);

const participantList = (page) =>
  page.$$eval('#participants li', (lis) => lis.map((li) => li.dataset.identity).sort());

test('two browsers through the demo page: media, chat, mute, reload, close', { timeout: 240000 }, async (t) => {
  const pylon = await startPylon('demo');
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    await pylon.stop();
  });
  const alice = await newPage(browser, 'alice');
  let bob = await newPage(browser, 'bob');

  await joinDemo(alice, pylon.demoUrl, ROOM, 'alice');
  await joinDemo(bob, pylon.demoUrl, ROOM, 'bob');
  await waitForMedia(alice, 'bob', "alice receiving bob");
  await waitForMedia(bob, 'alice', "bob receiving alice");
  assert.deepEqual(await participantList(alice), ['alice', 'bob']);

  // Two playing video tiles on each page (own camera and the other's).
  for (const page of [alice, bob]) {
    await waitFor(
      () => page.$$eval('.tile video', (vs) => vs.length === 2 && vs.every((v) => v.videoWidth > 0 && !v.paused)),
      20000,
      'two playing video tiles',
    );
  }
  await alice.screenshot({ path: path.join(OUTPUT, 'demo-two-participants.png') });

  // Chat over the data channel.
  await alice.fill('#chat-input', 'hello from alice');
  await alice.click('#chat-send');
  await waitFor(
    () => bob.evaluate(() => window.pylonDemo.chat.some((m) => m.text === 'hello from alice' && m.from === 'alice')),
    15000,
    'bob to get the chat message',
  );

  // Mute and unmute, seen on the other side.
  await alice.click('#toggle-mic');
  await waitFor(async () => (await remoteTile(bob, 'alice'))?.micMuted === 'true', 15000, "bob to see alice's mic muted");
  await alice.click('#toggle-camera');
  await waitFor(async () => (await remoteTile(bob, 'alice'))?.cameraMuted === 'true', 15000, "bob to see alice's camera off");
  await alice.click('#toggle-mic');
  await alice.click('#toggle-camera');
  await waitFor(async () => {
    const tile = await remoteTile(bob, 'alice');
    return tile?.micMuted === 'false' && tile?.cameraMuted === 'false';
  }, 15000, "bob to see alice unmuted");
  await waitForMedia(bob, 'alice', 'bob receiving alice after unmute');

  // A reload rejoins cleanly: one bob, whose media flows again.
  await bob.reload();
  await joinDemo(bob, pylon.demoUrl, ROOM, 'bob');
  await waitForMedia(alice, 'bob', 'alice receiving the reloaded bob');
  await waitForMedia(bob, 'alice', 'the reloaded bob receiving alice');
  assert.deepEqual(await participantList(alice), ['alice', 'bob']);

  // Closing the tab removes bob.
  const problems = [...alice.problems, ...bob.problems];
  await bob.context().close();
  await waitFor(async () => !(await inbound(alice, 'bob')).present, 20000, 'alice to see bob leave');
  assert.deepEqual(await participantList(alice), ['alice']);
  await alice.click('#leave');
  await waitFor(() => alice.evaluate(() => window.pylonDemo.room === null), 10000, 'alice to leave');

  problems.push(...alice.problems);
  assert.deepEqual(problems, [], 'browser console errors during a normal join/leave');
  assert.ok(pylon.alive(), 'pylon is still running');
});
