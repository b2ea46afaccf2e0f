"""A participant that publishes camera and microphone until killed (for the hard-kill test)."""

import asyncio
import os

from peers import Peer, Publisher


async def main():
    a = await Peer("A").connect(os.environ["PYLON_URL"], os.environ["PYLON_TOKEN"])
    await Publisher(a.room).publish()
    await asyncio.Event().wait()


asyncio.run(main())
