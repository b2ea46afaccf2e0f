"""The admin CLI round-trips against a real server: a token it mints lets the Python SDK join,
and `room` / `participant` commands see and change what the SDK participants see."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

from livekit import rtc

from conftest import API_KEY, API_SECRET, pylon_binary
from peers import Peer, Publisher, wait_for


def cli(pylon, *args: str, key: str = API_KEY, secret: str = API_SECRET) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIVEKIT_URL": pylon.http_url, "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret}
    return subprocess.run([str(pylon_binary()), *args], env=env, capture_output=True, text=True, timeout=30)


def cli_json(pylon, *args: str):
    r = cli(pylon, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def run(pylon, *args: str, **kw) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(cli, pylon, *args, **kw)


async def test_cli_token_joins_and_room_and_participant_commands_act(pylon):
    minted = await run(pylon, "token", "create", "--room", "cli-room", "--identity", "alice", "--name", "Alice")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    alice = await Peer("alice").connect(pylon.url, token)
    bob = await Peer("bob").connect(pylon.url, pylon.token("bob", room="cli-room"))
    pub = await Publisher(alice.room).publish()
    try:
        assert alice.room.local_participant.name == "Alice"
        await wait_for(lambda: bob.video_frames("alice/camera") > 5, 20, "bob to decode alice's video")

        # --json prints the Room API's answer as proto3 JSON.
        rooms = (await asyncio.to_thread(cli_json, pylon, "room", "list"))["rooms"]
        listed = {r["name"]: r for r in rooms}
        assert "cli-room" in listed, rooms
        assert listed["cli-room"]["numParticipants"] == 2, listed
        table = await run(pylon, "room", "list")
        assert table.returncode == 0 and "cli-room" in table.stdout

        people = (await asyncio.to_thread(cli_json, pylon, "participant", "list", "--room", "cli-room"))["participants"]
        assert sorted(p["identity"] for p in people) == ["alice", "bob"]

        mic = pub.audio_pub.sid
        muted = await run(pylon, "participant", "mute", "--room", "cli-room", "--identity", "alice", mic)
        assert muted.returncode == 0, muted.stderr
        await wait_for(lambda: bob.saw("muted", "alice", "microphone"), 10, "bob to see alice muted by the CLI")

        removed = await run(pylon, "participant", "remove", "--room", "cli-room", "bob")
        assert removed.returncode == 0, removed.stderr
        await wait_for(lambda: bob.disconnect_reason is not None, 10, "bob to be removed")
        assert bob.disconnect_reason == rtc.DisconnectReason.PARTICIPANT_REMOVED

        created = await run(pylon, "room", "create", "made-by-cli")
        assert created.returncode == 0, created.stderr
        assert "made-by-cli" in {r["name"] for r in (await asyncio.to_thread(cli_json, pylon, "room", "list"))["rooms"]}
        deleted = await run(pylon, "room", "delete", "cli-room")
        assert deleted.returncode == 0, deleted.stderr
        await wait_for(lambda: alice.disconnect_reason is not None, 10, "alice to be disconnected by the delete")
        assert alice.disconnect_reason == rtc.DisconnectReason.ROOM_DELETED
    finally:
        pub.stop()
        await alice.close()
        await bob.close()


async def test_cli_reports_refusals_and_exits_nonzero(pylon):
    wrong = await run(pylon, "room", "list", secret="not-the-right-secret-but-long-enough-0123")
    assert wrong.returncode != 0
    assert "unauthenticated" in wrong.stderr, wrong.stderr
    missing = await run(pylon, "participant", "remove", "--room", "nowhere", "nobody")
    assert missing.returncode != 0
    assert "not_found" in missing.stderr or "does not exist" in missing.stderr, missing.stderr
    unreachable = subprocess.run(
        [str(pylon_binary()), "room", "list", "--url", "http://127.0.0.1:9"],
        env={**os.environ, "LIVEKIT_API_KEY": API_KEY, "LIVEKIT_API_SECRET": API_SECRET},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unreachable.returncode != 0 and unreachable.stderr.startswith("pylon:"), unreachable.stderr
