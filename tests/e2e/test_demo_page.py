"""The demo page is served only where it should be, and mints tokens only in dev mode."""

from __future__ import annotations

import socket
import subprocess
import time

from conftest import ROOT, free_port, pylon_binary


async def test_demo_is_off_by_default_and_never_mints_outside_dev(pylon_factory, http):
    off = pylon_factory()
    async with http.get(f"{off.http_url}/demo/") as r:
        assert r.status == 404
    on = pylon_factory({"demo": {"enabled": True}})
    async with http.get(f"{on.http_url}/demo/") as r:
        assert r.status == 200
        page = await r.text()
        assert "livekit-client.umd.js" in page and "join-form" in page
    async with http.get(f"{on.http_url}/demo/token", params={"room": "r", "identity": "x"}) as r:
        assert r.status == 403, "a non-dev server minted a token"


async def test_dev_mode_serves_the_page_the_sdk_and_tokens(http):
    port, udp, tcp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [str(pylon_binary()), "serve", "--dev", "--port", str(port), "--udp-port", str(udp), "--tcp-port", str(tcp)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "pylon --dev did not listen"
                time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/demo"
        async with http.get(f"{base}/livekit-client.umd.js") as r:
            assert r.status == 200, "run scripts/setup-node.sh: the page serves livekit-client from node_modules"
            assert "LivekitClient" in await r.text()
        async with http.get(f"{base}/token", params={"room": "demo", "identity": "alice"}) as r:
            assert r.status == 200
            token = (await r.json())["token"]
        async with http.get(f"http://127.0.0.1:{port}/rtc/validate", params={"access_token": token}) as r:
            assert r.status == 200, "the minted token does not validate"
        async with http.get(f"{base}/token", params={"room": "", "identity": "alice"}) as r:
            assert r.status == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)
