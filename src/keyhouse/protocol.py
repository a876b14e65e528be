"""The HTTP server's protocol: uvicorn's httptools protocol, with a bound on a request's head.

httptools accepts a request line and headers of any size and keeps them in memory until they end: one
client sending an endless header could grow a worker without limit (measured: 200 MB of one header took
a worker from 97 MB to 403 MB). This protocol counts the bytes received while a request's head is
still incomplete and, past MAX_HEAD_BYTES, answers 431 and closes the connection, as HTTP servers and
proxies do. It happens before any operation is reached, like uvicorn's own 400 for malformed HTTP.

When the server stops, it also ends the change feed's long-polls (keyhouse.changes.shut_down), which a
graceful stop would otherwise wait out.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import changes

MAX_HEAD_BYTES = 64 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_bytes = 0  # bytes received since the current request's head began (0: between requests)
    _in_head = True
    _heads_begun = 0

    def shutdown(self) -> None:
        changes.shut_down()  # uvicorn asks every connection to shut down when it stops
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        """Counts only the bytes of a head: when the head ends inside this read, the parser says so
        (on_headers_complete) and what follows it is body, which the body cap bounds, not this one."""
        if not self._in_head:
            super().data_received(data)
            return
        room = MAX_HEAD_BYTES - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        self._head_bytes = MAX_HEAD_BYTES
        heads = self._heads_begun
        super().data_received(data[:room])  # the most a head may be: does it end in there?
        if self.transport.is_closing():
            return  # the parser refused it already
        if self._in_head and self._heads_begun == heads:
            self._refuse_head()
            return
        self.data_received(data[room:])  # a body, or a pipelined request's head counted afresh

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._heads_begun += 1
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request on this connection starts afresh

    def _refuse_head(self) -> None:
        message = b"Request header fields too large."
        self.logger.warning("refused a request head over %d bytes", MAX_HEAD_BYTES)
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-type: text/plain; charset=utf-8\r\n"
                             b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n"
                             + message)
        self.transport.close()
