"""Incremental Server-Sent Events decoder (the WHATWG `text/event-stream` format), over bytes.

Network chunks split anywhere (mid-line, mid-UTF-8 character, between the CR and LF of a
line ending), so the decoder keeps only the unfinished line between calls and does all its
scanning with `bytes.replace`/`split` in C; Python runs once per line, never per byte.
Data stays bytes: `orjson.loads` takes bytes directly and UTF-8 is validated there once.

Example:
    decoder = SSEDecoder()
    events = decoder.feed(b'data: {"a": 1}\\n\\nda')  # [ServerSentEvent(data=b'{"a": 1}')]
    events += decoder.feed(b"ta: [DONE]\\n\\n")       # + [ServerSentEvent(data=b"[DONE]")]
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True, frozen=True)
class ServerSentEvent:
    data: bytes  # the event's data lines joined by b"\n", as the spec dispatches them
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed raw bytes, get complete events. Unknown field names are not errors in the spec,
    but in an LLM stream they mean the body is not the stream we expect, so the first one is
    kept in `unexpected_line` for the caller to report."""

    __slots__ = (
        "_data",
        "_event",
        "_last_id",
        "_pending",
        "_skip_lf",
        "_started",
        "unexpected_line",
    )

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # pieces of the unfinished line, already free of CR/LF
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF completes CRLF
        self._started = False  # the first line has been seen (a BOM may only lead it)
        self._data: list[bytes] = []
        self._event: str | None = None
        self._last_id: str | None = None
        self.unexpected_line: bytes | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
            self._skip_lf = False  # that LF is used up, even if nothing follows it here
        if not chunk:
            return []
        # CR, LF and CRLF all end a line. A CR at the very end is a line end already; only
        # a following LF (in the next chunk) must not count as a second, empty line.
        self._skip_lf = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            self._pending.append(chunk)
            return []
        lines = chunk.split(b"\n")
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
        tail = lines.pop()
        self._pending = [tail] if tail else []
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> ServerSentEvent | None:
        """End of input. Returns the event that was still open (no blank line after it), which
        the spec would drop; the caller decides whether a truncated event is usable."""
        if self._pending:
            # A cut-off last line ("da") is truncation, not an unexpected field.
            unexpected = self.unexpected_line
            self._line(b"".join(self._pending))
            self._pending = []
            self.unexpected_line = unexpected
        if not self._data:
            return None
        return self._dispatch()

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            if self._data:
                return self._dispatch()
            self._reset()
            return None
        if line[0] == 0x3A:  # ":" starts a comment, e.g. ": keep-alive"
            return None
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:  # the spec ignores ids with NUL; the id outlives the event
                self._last_id = value.decode("utf-8", "replace")
        elif name != b"retry" and self.unexpected_line is None:
            self.unexpected_line = line
        return None

    def _dispatch(self) -> ServerSentEvent:
        event = ServerSentEvent(
            data=b"\n".join(self._data), event=self._event or "message", id=self._last_id
        )
        self._reset()
        return event

    def _reset(self) -> None:
        self._data = []
        self._event = None
