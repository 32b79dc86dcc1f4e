#!/usr/bin/env python3
"""A WebSocket client that is not ours (Python `websockets`), for the
end-to-end tests: connects to ws://HOST/prod on 127.0.0.1:PORT, sends a
routed message and an unknown one, prints each reply on a line, pings, and
closes normally.

    ws-client.py PORT HOST
"""
import asyncio
import json
import sys

import websockets


async def main(port: int, host: str) -> None:
    # The URI names the API's host (the Host header); the socket goes to loopback.
    async with websockets.connect(f"ws://{host}/prod", host="127.0.0.1", port=port) as ws:
        await ws.send(json.dumps({"action": "send", "text": "from python"}))
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
        await ws.send(json.dumps({"action": "no-such-route"}))
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
