// Webhooks received by a Node HTTP server and verified with the official Node server SDK's
// WebhookReceiver (livekit-server-sdk), while Python SDK participants join, publish and leave.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { TrackSource, WebhookReceiver } from 'livekit-server-sdk';
import { API_KEY, API_SECRET, Participant, ROOT, startPylon, waitFor } from './pylon.mjs';

const T = { timeout: 180000 };

/** An HTTP webhook endpoint on a free loopback port; every request goes through the SDK. */
async function startReceiver(t) {
  const sdk = new WebhookReceiver(API_KEY, API_SECRET);
  const received = { accepted: [], rejected: [], requests: [] };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const auth = req.headers.authorization;
      received.requests.push({ body, auth, contentType: req.headers['content-type'] });
      try {
        const event = await sdk.receive(body, auth);
        received.accepted.push(event);
        res.writeHead(200).end();
      } catch (e) {
        received.rejected.push({ body, error: String(e) });
        res.writeHead(401).end(String(e));
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(
    () =>
      new Promise((r) => {
        server.close(r);
        server.closeAllConnections();
      }),
  );
  received.url = `http://127.0.0.1:${server.address().port}/livekit-webhook`;
  received.names = (identity) =>
    received.accepted.filter((e) => identity === undefined || e.participant?.identity === identity).map((e) => e.event);
  return received;
}

/** Join and leave at the signalling level only (no media): Pylon reports it aborted. */
function joinWithoutMedia(pylon, token) {
  const script = `
import asyncio, sys, aiohttp
sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'tests', 'e2e'))})
from livekit.protocol import models, rtc as proto
from rawsignal import next_response, open_signal
async def main():
    async with aiohttp.ClientSession() as http:
        ws = await open_signal(http, sys.argv[1], sys.argv[2])
        assert (await next_response(ws)).WhichOneof("message") == "join"
        leave = proto.SignalRequest(leave=proto.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED))
        await ws.send_bytes(leave.SerializeToString())
        await ws.close()
asyncio.run(main())
`;
  return new Promise((resolve, reject) => {
    const p = spawn(path.join(ROOT, '.venv', 'bin', 'python'), ['-c', script, pylon.url, token], { stdio: 'inherit' });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`raw join exited ${code}`))));
  });
}

test('the Node WebhookReceiver accepts every event Pylon sends', T, async (t) => {
  const receiver = await startReceiver(t);
  const pylon = await startPylon('webhooks-every-event', {
    webhook: { api_key: API_KEY, urls: [receiver.url] },
    room: { empty_timeout: 2, departure_timeout: 1 },
  });
  t.after(() => pylon.stop());
  const startedAt = Math.floor(Date.now() / 1000);

  const a = await Participant.start(pylon, 'A', { room: 'hooks', publish: true, name: 'Alice' });
  const b = await Participant.start(pylon, 'B', { room: 'hooks' });
  await b.until(() => b.frames('video', 'A/camera') > 5, 30000, "B to decode A's video");
  await joinWithoutMedia(pylon, await pylon.token('ghost', 'hooks'));
  const published = Object.fromEntries(a.find((e) => e.event === 'local_published').map((e) => [e.track, e.sid]));
  await a.stop();
  await b.waitFor({ event: 'left', identity: 'A' }, 10000, 'B to see A leave');
  await b.stop();
  await waitFor(() => receiver.accepted.some((e) => e.event === 'room_finished'), 20000, 'room_finished');

  assert.deepEqual(receiver.rejected, [], 'the SDK receiver rejected a request Pylon signed');
  const events = receiver.accepted;
  const names = events.map((e) => e.event);
  assert.equal(names[0], 'room_started');
  assert.equal(names.at(-1), 'room_finished');
  for (const name of [
    'participant_joined',
    'participant_left',
    'participant_connection_aborted',
    'track_published',
    'track_unpublished',
  ]) {
    assert.ok(names.includes(name), `no ${name} among ${names}`);
  }
  assert.deepEqual(receiver.names('A'), [
    'participant_joined',
    'track_published',
    'track_published',
    'track_unpublished',
    'track_unpublished',
    'participant_left',
  ]);
  assert.deepEqual(receiver.names('B'), ['participant_joined', 'participant_left']);
  assert.ok(receiver.names('ghost').includes('participant_connection_aborted'), String(receiver.names('ghost')));

  const roomSid = events[0].room.sid;
  for (const e of events) {
    assert.match(e.id, /^EV_/);
    assert.equal(e.room.name, 'hooks');
    assert.equal(e.room.sid, roomSid);
    assert.ok(Number(e.createdAt) >= startedAt - 5 && Number(e.createdAt) <= Date.now() / 1000 + 5, `${e.createdAt}`);
  }
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'an event id was delivered twice');
  const cam = events.find((e) => e.event === 'track_published' && e.track.sid === published.camera);
  assert.ok(cam, 'no track_published for the camera');
  assert.equal(cam.track.source, TrackSource.CAMERA);
  assert.equal(cam.participant.name, 'Alice');
  assert.deepEqual(
    events.filter((e) => e.event === 'track_unpublished').map((e) => e.track.sid).sort(),
    [published.camera, published.microphone].sort(),
  );
  for (const r of receiver.requests) {
    assert.equal(r.contentType.split(';')[0], 'application/webhook+json');
    assert.ok(!r.auth.startsWith('Bearer '), 'the JWT is sent raw');
  }
});

test('the Node WebhookReceiver rejects a tampered body', T, async (t) => {
  const receiver = await startReceiver(t);
  const pylon = await startPylon('webhooks-tampered', {
    webhook: { api_key: API_KEY, urls: [receiver.url] },
    room: { empty_timeout: 60 },
  });
  t.after(() => pylon.stop());
  await pylon.roomService().createRoom({ name: 'tamper-room' });
  await waitFor(() => receiver.accepted.length > 0, 10000, 'room_started to be delivered');

  const { body, auth } = receiver.requests[0];
  const sdk = new WebhookReceiver(API_KEY, API_SECRET);
  assert.equal((await sdk.receive(body, auth)).room.name, 'tamper-room');
  const i = body.indexOf('tamper-room');
  const tampered = `${body.slice(0, i)}T${body.slice(i + 1)}`;
  assert.equal(tampered.length, body.length);
  await assert.rejects(sdk.receive(tampered, auth), /sha256/);
  const other = new WebhookReceiver(API_KEY, 'another-secret-that-is-long-enough-for-hs256');
  await assert.rejects(other.receive(body, auth));
  await assert.rejects(sdk.receive(body, undefined), /authorization header is empty/);
});
