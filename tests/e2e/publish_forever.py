"""A participant that publishes camera and microphone until killed (for the hard-kill test), or
with PYLON_PUBLISH=0 only subscribes to everything (a subscriber that can be frozen)."""

import asyncio
import os

from peers import Peer, Publisher


async def main():
    identity = os.environ.get("PYLON_IDENTITY", "A")
    a = await Peer(identity).connect(os.environ["PYLON_URL"], os.environ["PYLON_TOKEN"])
    if os.environ.get("PYLON_PUBLISH", "1") == "1":
        await Publisher(a.room).publish()
    await asyncio.Event().wait()


asyncio.run(main())
