// Pylon's demo page: join a room with livekit-client (served by Pylon from the npm install),
// see everyone's video, mute, chat over the data channel. In --dev mode Pylon mints the token.
'use strict';

(() => {
  const LK = window.LivekitClient;
  const $ = (id) => document.getElementById(id);
  const state = { room: null, chat: [] };
  // Exposed for tests and for poking around in the console.
  window.pylonDemo = state;

  const setStatus = (text) => { $('status').textContent = text; };

  if (!LK) {
    setStatus('livekit-client did not load: run scripts/setup-node.sh and restart Pylon.');
    return;
  }

  const params = new URLSearchParams(location.search);
  if (params.get('room')) $('room').value = params.get('room');
  if (params.get('name')) $('name').value = params.get('name');

  function tileFor(participant) {
    const id = `tile-${participant.identity}`;
    let tile = document.getElementById(id);
    if (!tile) {
      tile = document.createElement('div');
      tile.className = 'tile';
      tile.id = id;
      tile.dataset.identity = participant.identity;
      tile.dataset.local = String(participant === state.room.localParticipant);
      const label = document.createElement('span');
      label.className = 'label';
      label.textContent = participant.name || participant.identity;
      const mic = document.createElement('span');
      mic.className = 'mic';
      tile.append(label, mic);
      $('tiles').append(tile);
    }
    return tile;
  }

  function removeTile(participant) {
    document.getElementById(`tile-${participant.identity}`)?.remove();
  }

  function showMuted(participant) {
    const tile = tileFor(participant);
    const cam = participant.getTrackPublication(LK.Track.Source.Camera);
    const mic = participant.getTrackPublication(LK.Track.Source.Microphone);
    tile.dataset.cameraMuted = String(!cam || cam.isMuted);
    tile.dataset.micMuted = String(!mic || mic.isMuted);
    tile.querySelector('.mic').textContent = !mic || mic.isMuted ? 'mic off' : 'mic on';
  }

  function attachVideo(track, participant) {
    const tile = tileFor(participant);
    tile.querySelector('video')?.remove();
    const el = track.attach();
    el.muted = true;
    el.playsInline = true;
    tile.prepend(el);
  }

  function renderParticipants() {
    const list = $('participants');
    list.replaceChildren();
    const room = state.room;
    if (!room) return;
    for (const p of [room.localParticipant, ...room.remoteParticipants.values()]) {
      const li = document.createElement('li');
      li.dataset.identity = p.identity;
      li.textContent = (p.name || p.identity) + (p === room.localParticipant ? ' (you)' : '');
      list.append(li);
    }
  }

  function addMessage(from, text) {
    state.chat.push({ from, text });
    const li = document.createElement('li');
    const who = document.createElement('span');
    who.className = 'from';
    who.textContent = from + ':';
    li.append(who, document.createTextNode(' ' + text));
    $('messages').append(li);
    li.scrollIntoView({ block: 'end' });
  }

  async function fetchToken(room, identity) {
    const res = await fetch(`token?room=${encodeURIComponent(room)}&identity=${encodeURIComponent(identity)}`);
    if (!res.ok) throw new Error(`token: ${res.status} ${await res.text()}`);
    return (await res.json()).token;
  }

  async function join(roomName, name) {
    setStatus('Connecting…');
    // `?adaptive=1`: each tile gets the layer its size needs, and publishers send only the
    // layers someone watches (livekit-client's adaptiveStream and dynacast).
    const adaptive = params.get('adaptive') === '1';
    // `?codec=vp9` (or av1, h264): the camera's codec; livekit-client sends VP9 and AV1 as one
    // stream of spatial layers (SVC) and the others as simulcast.
    const codec = params.get('codec');
    const room = new LK.Room({
      ...(adaptive ? { adaptiveStream: true, dynacast: true } : {}),
      ...(codec ? { publishDefaults: { videoCodec: codec } } : {}),
    });
    state.room = room;
    room
      .on(LK.RoomEvent.ParticipantConnected, (p) => { tileFor(p); showMuted(p); renderParticipants(); })
      .on(LK.RoomEvent.ParticipantDisconnected, (p) => { removeTile(p); renderParticipants(); })
      .on(LK.RoomEvent.TrackSubscribed, (track, _pub, p) => {
        if (track.kind === LK.Track.Kind.Video) attachVideo(track, p);
        else $('audio').append(track.attach());
        showMuted(p);
      })
      .on(LK.RoomEvent.TrackUnsubscribed, (track, _pub, p) => {
        track.detach().forEach((el) => el.remove());
        // A tile shows one video: when a screen share ends, show the camera again.
        const cam = p.getTrackPublication(LK.Track.Source.Camera)?.track;
        if (track.kind === LK.Track.Kind.Video && cam && cam !== track) attachVideo(cam, p);
      })
      .on(LK.RoomEvent.TrackPublished, (_pub, p) => showMuted(p))
      .on(LK.RoomEvent.TrackUnpublished, (_pub, p) => showMuted(p))
      .on(LK.RoomEvent.TrackMuted, (_pub, p) => showMuted(p))
      .on(LK.RoomEvent.TrackUnmuted, (_pub, p) => showMuted(p))
      .on(LK.RoomEvent.LocalTrackPublished, (pub) => {
        if (pub.kind === LK.Track.Kind.Video) attachVideo(pub.track, room.localParticipant);
        showMuted(room.localParticipant);
      })
      .on(LK.RoomEvent.DataReceived, (payload, p, _kind, topic) => {
        if (topic === 'chat') addMessage(p?.name || p?.identity || 'server', new TextDecoder().decode(payload));
      })
      .on(LK.RoomEvent.Reconnecting, () => setStatus('Reconnecting…'))
      .on(LK.RoomEvent.Reconnected, () => setStatus(`Connected to ${room.name} as ${name}.`))
      .on(LK.RoomEvent.Disconnected, (reason) => {
        setStatus(`Disconnected (${reason ?? 'left'}).`);
        $('tiles').replaceChildren();
        $('call').hidden = true;
        $('join-form').hidden = false;
        state.room = null;
      });

    const token = await fetchToken(roomName, name);
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
    // `?relay=1`: media only through the TURN server the join response names (the server's
    // embedded one when `turn.enabled`), as livekit-client's own TURN check does.
    const relay = params.get('relay') === '1';
    await room.connect(url, token, relay ? { rtcConfig: { iceTransportPolicy: 'relay' } } : {});
    $('join-form').hidden = true;
    $('call').hidden = false;
    tileFor(room.localParticipant);
    for (const p of room.remoteParticipants.values()) { tileFor(p); showMuted(p); }
    renderParticipants();
    setStatus(`Connected to ${room.name} as ${name}.`);
    await room.localParticipant.enableCameraAndMicrophone();
    showMuted(room.localParticipant);
  }

  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    join($('room').value.trim(), $('name').value.trim()).catch((err) => {
      setStatus(`Could not join: ${err.message}`);
      state.room?.disconnect();
    });
  });

  // A button that turns one local track on or off and then names what a press does next.
  const toggleButton = (id, isOn, setOn, labelWhenOn, labelWhenOff) => {
    $(id).addEventListener('click', async () => {
      const lp = state.room.localParticipant;
      const on = !isOn(lp);
      await setOn(lp, on);
      $(id).textContent = on ? labelWhenOn : labelWhenOff;
      $(id).classList.toggle('off', !on);
      showMuted(lp);
    });
  };
  toggleButton('toggle-mic', (lp) => lp.isMicrophoneEnabled, (lp, on) => lp.setMicrophoneEnabled(on),
    'Mute microphone', 'Unmute microphone');
  toggleButton('toggle-camera', (lp) => lp.isCameraEnabled, (lp, on) => lp.setCameraEnabled(on),
    'Stop camera', 'Start camera');

  $('leave').addEventListener('click', () => state.room?.disconnect());

  $('chat-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('chat-input').value.trim();
    if (!text || !state.room) return;
    $('chat-input').value = '';
    await state.room.localParticipant.publishData(new TextEncoder().encode(text), { reliable: true, topic: 'chat' });
    addMessage('you', text);
  });
})();
