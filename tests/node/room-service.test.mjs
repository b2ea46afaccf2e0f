// The Room API through the official Node server SDK (livekit-server-sdk RoomServiceClient,
// which speaks Twirp JSON), checked by what real Python SDK participants print (participant.py).
// Errors follow LiveKit's server: missing grants and an admin grant for another room are
// `unauthenticated` (401), unknown rooms/participants `not_found` (404).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccessToken, DataPacket_Kind, TrackSource, TrackType } from 'livekit-server-sdk';
import { API_KEY, API_SECRET, Participant, expectTwirpError, startPylon } from './pylon.mjs';

const ROOM = 'node-room';
const T = { timeout: 180000 };

async function setup(t, extra) {
  const pylon = await startPylon(`room-service-${t.name}`, extra);
  t.after(() => pylon.stop());
  return { pylon, svc: pylon.roomService() };
}

const join = (pylon, identity, opts = {}) => Participant.start(pylon, identity, { room: ROOM, ...opts });

test('createRoom, listRooms with names, getParticipant and listParticipants', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const room = await svc.createRoom({ name: ROOM, metadata: 'from-node', emptyTimeout: 120, maxParticipants: 5 });
  assert.equal(room.name, ROOM);
  assert.match(room.sid, /^RM_/);
  assert.equal(room.metadata, 'from-node');
  assert.equal(room.maxParticipants, 5);
  await svc.createRoom({ name: 'another-room' });

  assert.deepEqual((await svc.listRooms([ROOM])).map((r) => [r.name, r.sid]), [[ROOM, room.sid]]);
  assert.deepEqual((await svc.listRooms([ROOM, 'nope'])).map((r) => r.name), [ROOM]);
  assert.deepEqual((await svc.listRooms()).map((r) => r.name).sort(), ['another-room', ROOM]);

  const a = await join(pylon, 'A', { publish: true, name: 'Alice' });
  const b = await join(pylon, 'B');
  const connected = a.events.find((e) => e.event === 'connected');
  assert.equal(connected.metadata, 'from-node', 'the participant sees the metadata given at CreateRoom');
  assert.equal(connected.room_sid, room.sid);
  await b.until(() => b.frames('video', 'A/camera') > 5, 30000, "B to decode A's video");

  const parts = await svc.listParticipants(ROOM);
  assert.deepEqual(parts.map((p) => p.identity).sort(), ['A', 'B']);
  const bConnected = b.events.find((e) => e.event === 'connected');
  assert.equal(parts.find((p) => p.identity === 'B').sid, bConnected.sid);

  const info = await svc.getParticipant(ROOM, 'A');
  assert.equal(info.identity, 'A');
  assert.equal(info.sid, connected.sid);
  assert.equal(info.name, 'Alice');
  const published = Object.fromEntries(a.find((e) => e.event === 'local_published').map((e) => [e.track, e.sid]));
  const tracks = Object.fromEntries(info.tracks.map((tr) => [tr.sid, tr]));
  assert.deepEqual(Object.keys(tracks).sort(), [published.camera, published.microphone].sort());
  assert.equal(tracks[published.camera].type, TrackType.VIDEO);
  assert.equal(tracks[published.camera].source, TrackSource.CAMERA);
  assert.equal(tracks[published.microphone].type, TrackType.AUDIO);
  assert.equal((await svc.listRooms([ROOM]))[0].numParticipants, 2);
});

test('removeParticipant disconnects it with PARTICIPANT_REMOVED', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const a = await join(pylon, 'A');
  const b = await join(pylon, 'B');
  await a.waitFor({ event: 'joined', identity: 'B' }, 10000, 'A to see B');

  await svc.removeParticipant(ROOM, 'B');
  const gone = await b.waitFor({ event: 'disconnected' }, 10000, 'B to be disconnected');
  assert.equal(gone.reason, 'PARTICIPANT_REMOVED');
  await a.waitFor({ event: 'left', identity: 'B' }, 10000, 'A to see B leave');
  assert.ok(!a.saw({ event: 'disconnected' }));
  assert.deepEqual((await svc.listParticipants(ROOM)).map((p) => p.identity), ['A']);
  await expectTwirpError(svc.removeParticipant(ROOM, 'B'), 'not_found', 404);
  await expectTwirpError(svc.getParticipant(ROOM, 'B'), 'not_found', 404);
});

test('mutePublishedTrack mutes at the publisher and for the others; remote unmute is refused', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const b = await join(pylon, 'B');
  const a = await join(pylon, 'A', { publish: true });
  await b.until(() => b.frames('video', 'A/camera') > 5, 30000, "B to decode A's video");
  const mic = a.events.find((e) => e.event === 'local_published' && e.track === 'microphone').sid;

  const track = await svc.mutePublishedTrack(ROOM, 'A', mic, true);
  assert.equal(track.sid, mic);
  assert.equal(track.muted, true);
  await a.waitFor({ event: 'muted', identity: 'A', track: 'microphone' }, 10000, "A's SDK to mute its microphone");
  await b.waitFor({ event: 'muted', identity: 'A', track: 'microphone' }, 10000, 'B to see it muted');
  const info = await svc.getParticipant(ROOM, 'A');
  assert.equal(info.tracks.find((tr) => tr.sid === mic).muted, true);

  await expectTwirpError(svc.mutePublishedTrack(ROOM, 'A', mic, false), 'failed_precondition', 412);
  assert.ok(!b.saw({ event: 'unmuted', identity: 'A', track: 'microphone' }));
});

test('updateParticipant: metadata, name and attributes reach everyone; revoking publish unpublishes', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const b = await join(pylon, 'B');
  const a = await join(pylon, 'A', { publish: true });
  await b.until(() => b.frames('video', 'A/camera') > 5, 30000, "B to decode A's video");

  const info = await svc.updateParticipant(ROOM, 'A', {
    metadata: 'node-meta',
    name: 'Alice from Node',
    attributes: { team: 'blue', seat: '7' },
  });
  assert.equal(info.metadata, 'node-meta');
  assert.equal(info.name, 'Alice from Node');
  assert.deepEqual({ ...info.attributes }, { team: 'blue', seat: '7' });
  await b.waitFor({ event: 'metadata', identity: 'A', metadata: 'node-meta' }, 10000, "B to see A's metadata");
  await b.waitFor({ event: 'name', identity: 'A', name: 'Alice from Node' }, 10000, "B to see A's name");
  await b.waitFor(
    // The attribute map has no order on the wire: compare as sorted entries.
    (e) =>
      e.event === 'attributes' &&
      e.identity === 'A' &&
      JSON.stringify(Object.entries(e.attributes ?? {}).sort()) === JSON.stringify([['seat', '7'], ['team', 'blue']]),
    10000,
    "B to see A's attributes",
  );
  await a.waitFor({ event: 'metadata', identity: 'A', metadata: 'node-meta' }, 10000, 'A to see its own metadata');

  const revoked = await svc.updateParticipant(ROOM, 'A', {
    permission: { canPublish: false, canSubscribe: true, canPublishData: true },
  });
  assert.equal(revoked.permission.canPublish, false);
  await b.waitFor({ event: 'unpublished', identity: 'A', track: 'camera' }, 10000, "B to see A's camera go");
  await b.waitFor({ event: 'unpublished', identity: 'A', track: 'microphone' }, 10000, "B to see A's microphone go");
  await a.waitFor({ event: 'permissions', identity: 'A', can_publish: false }, 10000, 'A to learn it may not publish');
  assert.deepEqual((await svc.getParticipant(ROOM, 'A')).tracks, []);
});

test('updateSubscriptions stops and restarts a track for one subscriber', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const b = await join(pylon, 'B');
  const a = await join(pylon, 'A', { publish: true });
  await b.until(() => b.frames('video', 'A/camera') > 10, 30000, "B to decode A's video");
  const camera = a.events.find((e) => e.event === 'local_published' && e.track === 'camera').sid;

  await svc.updateSubscriptions(ROOM, 'B', [camera], false);
  const stalled = await b.framesStalled('A/camera');
  const audio = b.frames('audio', 'A/microphone');
  await b.until(() => b.frames('audio', 'A/microphone') > audio + 50, 10000, "B's audio to keep flowing");

  await svc.updateSubscriptions(ROOM, 'B', [camera], true);
  await b.until(() => b.frames('video', 'A/camera') > stalled + 10, 20000, "B to decode A's video again");
});

test('sendData reaches participants with its topic, and only the destinations named', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const a = await join(pylon, 'A');
  const b = await join(pylon, 'B');
  const c = await join(pylon, 'C');
  await a.until(() => a.saw({ event: 'joined', identity: 'C' }), 10000, 'A to see C');
  const enc = (s) => new TextEncoder().encode(s);

  await svc.sendData(ROOM, enc('to-all'), DataPacket_Kind.RELIABLE, { topic: 'news' });
  await svc.sendData(ROOM, enc('to-b'), DataPacket_Kind.RELIABLE, { topic: 'dm', destinationIdentities: ['B'] });
  await svc.sendData(ROOM, enc('fence'), DataPacket_Kind.RELIABLE, {});
  for (const p of [a, b, c]) {
    await p.waitFor({ event: 'data', payload: 'fence' }, 10000, `${p.identity} to get the fence`);
    assert.ok(p.saw({ event: 'data', payload: 'to-all', topic: 'news', from: null }), `${p.identity}: ${JSON.stringify(p.events.filter((e) => e.event === 'data'))}`);
  }
  assert.ok(b.saw({ event: 'data', payload: 'to-b', topic: 'dm' }));
  assert.ok(!a.saw({ event: 'data', payload: 'to-b' }), 'A got the packet addressed to B');
  assert.ok(!c.saw({ event: 'data', payload: 'to-b' }), 'C got the packet addressed to B');
});

test('updateRoomMetadata reaches participants', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const a = await join(pylon, 'A');
  const b = await join(pylon, 'B');
  const room = await svc.updateRoomMetadata(ROOM, 'node-room-meta');
  assert.equal(room.metadata, 'node-room-meta');
  for (const p of [a, b]) {
    await p.waitFor({ event: 'room_metadata', metadata: 'node-room-meta' }, 10000, `${p.identity} to see it`);
  }
  assert.equal((await svc.listRooms([ROOM]))[0].metadata, 'node-room-meta');
});

test('deleteRoom disconnects everyone with ROOM_DELETED', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const a = await join(pylon, 'A', { publish: true });
  const b = await join(pylon, 'B');
  const kept = await Participant.start(pylon, 'K', { room: 'kept' });
  await svc.deleteRoom(ROOM);
  for (const p of [a, b]) {
    const ev = await p.waitFor({ event: 'disconnected' }, 10000, `${p.identity} to be disconnected`);
    assert.equal(ev.reason, 'ROOM_DELETED');
  }
  assert.deepEqual((await svc.listRooms()).map((r) => r.name), ['kept']);
  assert.ok(!kept.saw({ event: 'disconnected' }));
  await expectTwirpError(svc.deleteRoom(ROOM), 'not_found', 404);
});

test('moveParticipant moves it to the destination room with its identity', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const a = await join(pylon, 'A');
  const b = await join(pylon, 'B');
  const c = await Participant.start(pylon, 'C', { room: 'destination' });
  assert.deepEqual(b.events.find((e) => e.event === 'connected').remote, ['A'], 'B joined with A in the room');

  await svc.moveParticipant(ROOM, 'A', 'destination');
  await b.waitFor({ event: 'left', identity: 'A' }, 15000, 'B (source) to see A leave');
  await c.waitFor({ event: 'joined', identity: 'A' }, 15000, 'C (destination) to see A join');
  const moved = await a.waitFor({ event: 'moved' }, 15000, "A's SDK to report the move");
  assert.equal(moved.room, 'destination');
  assert.ok(!a.saw({ event: 'disconnected' }), 'A was disconnected instead of moved');
  assert.deepEqual((await svc.listParticipants(ROOM)).map((p) => p.identity), ['B']);
  assert.deepEqual((await svc.listParticipants('destination')).map((p) => p.identity).sort(), ['A', 'C']);

  a.send('data moved hello-destination');
  await c.waitFor({ event: 'data', from: 'A', payload: 'hello-destination' }, 10000, "C to get A's data");
  await expectTwirpError(svc.moveParticipant('destination', 'A', 'destination'), 'invalid_argument', 400);
});

test('calls without the needed grant are unauthenticated, as in LiveKit', T, async (t) => {
  const { pylon, svc } = await setup(t);
  const a = await join(pylon, 'A');
  const sign = async (grant, identity) => {
    const at = new AccessToken(API_KEY, API_SECRET, identity ? { identity } : {});
    at.addGrant(grant);
    return at.toJwt();
  };
  const calls = (c) => ({
    createRoom: () => c.createRoom({ name: 'sneaky' }),
    listRooms: () => c.listRooms(),
    deleteRoom: () => c.deleteRoom(ROOM),
    listParticipants: () => c.listParticipants(ROOM),
    getParticipant: () => c.getParticipant(ROOM, 'A'),
    removeParticipant: () => c.removeParticipant(ROOM, 'A'),
    mutePublishedTrack: () => c.mutePublishedTrack(ROOM, 'A', 'TR_x', true),
    updateParticipant: () => c.updateParticipant(ROOM, 'A', { metadata: 'hijacked' }),
    updateSubscriptions: () => c.updateSubscriptions(ROOM, 'A', ['TR_x'], false),
    sendData: () => c.sendData(ROOM, new Uint8Array([1]), DataPacket_Kind.RELIABLE, {}),
    updateRoomMetadata: () => c.updateRoomMetadata(ROOM, 'hijacked'),
    moveParticipant: () => c.moveParticipant(ROOM, 'A', 'elsewhere'),
  });
  const all = Object.keys(calls(svc));
  const cases = [
    ['join token', await sign({ roomJoin: true, room: ROOM }, 'mallory'), all],
    [
      'admin of another room',
      await sign({ roomAdmin: true, room: 'other', destinationRoom: 'elsewhere' }),
      all.filter((m) => !['createRoom', 'listRooms', 'deleteRoom'].includes(m)),
    ],
    ['list only', await sign({ roomList: true }), all.filter((m) => m !== 'listRooms')],
    ['create only', await sign({ roomCreate: true }), all.filter((m) => !['createRoom', 'deleteRoom'].includes(m))],
    ['admin without destination', await sign({ roomAdmin: true, room: ROOM }), ['moveParticipant']],
  ];
  for (const [name, token, refused] of cases) {
    const client = pylon.roomService({ token });
    const methods = calls(client);
    for (const m of refused) {
      await expectTwirpError(methods[m](), 'unauthenticated', 401).catch((e) => {
        throw new Error(`${name}: ${m}: ${e.message}`);
      });
    }
  }
  // A key the server does not know.
  const stranger = new (svc.constructor)(pylon.httpUrl, 'unknown-key', API_SECRET, { failover: false });
  await expectTwirpError(stranger.listRooms(), 'unauthenticated', 401);

  // Nothing happened.
  assert.deepEqual((await svc.listRooms()).map((r) => r.name), [ROOM]);
  const info = await svc.getParticipant(ROOM, 'A');
  assert.equal(info.metadata, '');
  assert.ok(!a.saw({ event: 'disconnected' }));
  assert.ok(!a.saw({ event: 'data' }));
  assert.ok(!a.saw({ event: 'room_metadata' }));
});

test('unknown rooms and participants are not_found', T, async (t) => {
  const { pylon, svc } = await setup(t);
  await join(pylon, 'A');
  await expectTwirpError(svc.getParticipant(ROOM, 'ghost'), 'not_found', 404);
  await expectTwirpError(svc.getParticipant('no-such-room', 'A'), 'not_found', 404);
  await expectTwirpError(svc.removeParticipant(ROOM, 'ghost'), 'not_found', 404);
  await expectTwirpError(svc.updateParticipant(ROOM, 'ghost', { metadata: 'x' }), 'not_found', 404);
  await expectTwirpError(svc.deleteRoom('no-such-room'), 'not_found', 404);
  await expectTwirpError(svc.updateRoomMetadata('no-such-room', 'x'), 'not_found', 404);
  assert.deepEqual((await svc.listRooms()).map((r) => r.name), [ROOM]);
});
