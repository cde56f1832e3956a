"""
Closing the client's TCP connection from inside an ASGI app, with no HTTP response at all.

ASGI has no message for "hang up". uvicorn hands the app the bound method
``RequestResponseCycle.send`` of its h11, httptools and zttp protocols; the cycle holds the
``asyncio.Transport`` of the connection, which we close directly. The cycle is then marked
disconnected so uvicorn does not try to answer 500 for a request that "returned without
starting a response".
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from starlette.types import Receive, Send


def find_transport(send: Send) -> tuple[asyncio.BaseTransport, Any] | None:
    """
    The transport behind uvicorn's ``send`` callable, and the object that holds it.

    Looks at ``send.__self__.transport`` and, when middleware wrapped ``send`` in a closure
    (uvicorn's trace logging does), at the callables captured by that closure.

    :param send: the ASGI ``send`` callable given by the server.
    :return: ``(transport, holder)`` or None when the server is not uvicorn-like.
    """
    pending: list[Any] = [send]
    seen: set[int] = set()
    while pending:
        candidate = pending.pop()
        if id(candidate) in seen:
            continue
        seen.add(id(candidate))
        holder = getattr(candidate, "__self__", None)
        transport = getattr(holder, "transport", None)
        if transport is not None and hasattr(transport, "abort"):
            return transport, holder
        for cell in getattr(candidate, "__closure__", None) or ():
            try:
                content = cell.cell_contents
            except ValueError:  # empty cell
                continue
            if callable(content):
                pending.append(content)
    return None


async def drain_request(receive: Receive) -> None:
    """Read the request body to its end so the client finished sending before we hang up."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def drop_connection(send: Send, style: str = "close") -> None:
    """
    Close the connection without writing a single byte of response.

    :param send: the ASGI ``send`` callable given by uvicorn.
    :param style: ``close`` sends FIN (the client sees "connection closed without response"),
        ``reset`` sends RST (the client sees "connection reset by peer").
    :raises RuntimeError: when the server does not expose its transport (not uvicorn).
    """
    found = find_transport(send)
    if found is None:
        raise RuntimeError("cannot drop the connection: the ASGI server does not expose its transport")
    transport, holder = found
    if style == "reset":
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger on with a zero timeout turns close() into an RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    if hasattr(holder, "disconnected"):
        holder.disconnected = True
    # Let the protocol's connection_lost run before the app returns.
    await asyncio.sleep(0)
