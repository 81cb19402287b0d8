"""sse-starlette under benchmark (a peer): the same endpoints as
``eventstream_app``, with an in-process fan-out to one asyncio queue per
subscriber, as sse-starlette's examples do.
"""

from __future__ import annotations

import asyncio
import time
import typing as t

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

subscribers: set[asyncio.Queue[str]] = set()


async def sub(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()
    subscribers.add(queue)

    async def events() -> t.AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            subscribers.discard(queue)

    return EventSourceResponse(events())


async def publish(request: Request) -> JSONResponse:
    count = int(request.query_params["count"])
    rate = float(request.query_params.get("rate", 0))
    start = time.monotonic()
    for n in range(count):
        if rate:
            await asyncio.sleep(max(start + n / rate - time.monotonic(), 0))
        data = str(time.time_ns() // 1000)
        for queue in subscribers:
            queue.put_nowait(data)
        if not rate:
            await asyncio.sleep(0)
    return JSONResponse({"published": count, "seconds": time.monotonic() - start})


app = Starlette(
    routes=[
        Route("/sub/{channel}", sub),
        Route("/publish", publish, methods=["POST"]),
    ]
)
