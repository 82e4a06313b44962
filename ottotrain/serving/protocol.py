"""uvicorn's HTTP/1.1 protocol (h11) with the limits a public server needs, and JSON errors.

- At most ``max_connections`` open connections: one more is answered 503 and closed at once,
  so half-sent requests cannot use up the process's file descriptors and stop the server.
- A request's line and headers must arrive within ``header_timeout`` seconds of the
  connection opening (or of its first byte on a kept-alive connection), else 408 and closed.
- A request uvicorn cannot parse (``Content-Length: abc``, a broken request line) gets a
  JSON 400 naming h11's reason, not uvicorn's plain text.
- A response's head and body leave in one write (``OneWrite``): one ``send`` per answer.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def raw_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response with ``{"error": message}``, closing the connection."""
    body = json.dumps({"error": message}, ensure_ascii=True).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class OneWrite:
    """A connection's transport, except that a response's head (``HTTP/1.1 2..``-``5..``) is
    held until the next write, and goes out with it. uvicorn writes a head, then a body, then
    the end of the message (``b""`` where a content-length frames it): with TCP_NODELAY each
    write was its own packet and system call, and the client woke up twice per answer. Every
    head is followed by a write of the same response, so none is held for long; ``close``
    and ``write_eof`` write a held head first. A 1xx head (100 Continue) is never held: the
    client waits for it before sending the body."""

    __slots__ = ("transport", "head")

    def __init__(self, transport):
        self.transport, self.head = transport, None

    def write(self, data):
        if self.head is not None:
            data, self.head = self.head + bytes(data), None
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1":
            self.head = bytes(data)
            return
        self.transport.write(data)

    def flush(self):
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)

    def close(self):
        self.flush()
        self.transport.close()

    def write_eof(self):
        self.flush()
        self.transport.write_eof()

    def __getattr__(self, name):  # the rest of the transport's interface, unchanged
        return getattr(self.transport, name)


class LimitedH11Protocol(H11Protocol):
    """Reads its limits from ``config.limits`` (``serving.limits.Limits``)."""

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits
        self.refused = False
        self.header_timer = None
        self.why = "malformed request line or headers"
        next_event = self.conn.next_event

        def next_event_noting_why():
            try:
                return next_event()
            except h11.RemoteProtocolError as e:
                self.why = str(e)[:200]
                raise

        self.conn.next_event = next_event_noting_why

    def connection_made(self, transport):
        if len(self.connections) >= self.limits.max_connections:
            self.refused = True
            msg = (
                f"too many open connections (at most {self.limits.max_connections}, --max-connections); retry"
            )
            transport.write(raw_response(503, msg))
            # Closed with the request unread, the socket would be reset and the answer lost:
            # end our side now, close a moment later.
            transport.write_eof()
            self.loop.call_later(1.0, transport.close)
            return
        super().connection_made(OneWrite(transport))
        self._arm()

    def connection_lost(self, exc):
        if self.refused:
            return
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes):
        if self.refused:
            return
        if self.header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)

    def on_response_complete(self):
        self._disarm()
        super().on_response_complete()

    def _arm(self):
        self._disarm()
        self.header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timeout)

    def _disarm(self):
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self):
        self.header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            wait = self.limits.header_timeout
            msg = f"the request's headers did not arrive within {wait:g} s (--header-timeout)"
            self.transport.write(raw_response(408, msg))
            self.transport.close()

    def send_400_response(self, msg: str):
        self.transport.write(raw_response(400, f"invalid HTTP request: {self.why}"))
        self.transport.close()
