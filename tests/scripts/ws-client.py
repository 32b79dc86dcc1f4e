#!/usr/bin/env python3
"""A WebSocket client that is not ours (Python `websockets`), for the
end-to-end tests: connects to ws://HOST/prod on 127.0.0.1:PORT (wss://,
verified against CAFILE, when one is given), sends a routed message and an
unknown one, prints each reply on a line, pings, and closes normally.

    ws-client.py PORT HOST [CAFILE]
"""
import asyncio
import json
import ssl
import sys

import websockets


async def main(port: int, host: str, cafile: str | None) -> None:
    # The URI names the API's host (Host header, TLS server name); the socket
    # goes to loopback.
    options = {"host": "127.0.0.1", "port": port}
    if cafile:
        uri = f"wss://{host}/prod"
        options.update(ssl=ssl.create_default_context(cafile=cafile), server_hostname=host)
    else:
        uri = f"ws://{host}/prod"
    async with websockets.connect(uri, **options) as ws:
        await ws.send(json.dumps({"action": "send", "text": "from python"}))
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
        await ws.send(json.dumps({"action": "no-such-route"}))
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
