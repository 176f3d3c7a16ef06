"""`AnswerReader`: one upstream answer turned into a `Completion`, within the shadow budgets.

One reader serves both sides of a sampled request, so both get the same size cap, the same
stream check, the same decompression and the same pacing:
- the primary's side copy is *pushed*: `forward_primary` hands over each chunk it relays
  (`feed`, which only keeps the wire bytes, never parses), and the copy is parsed later, off
  the primary's path, by the exchange task (`completion`);
- a shadow's answer is *pulled* (`read`): chunks are taken from the target at the pace its
  budget allows, so a candidate that streams without end is slowed by TCP backpressure, then
  cut at the size cap, instead of taking the event loop.

Parsing runs in slices of at most `SLICE_BYTES`, in turns of the target's `Pace` that end
after `TURN_S` and are timed against its share of the loop, so no chunk however large or
however pathological (a megabyte of blank lines parses at ~130 ns a byte) holds the loop for
more than a millisecond or two. Memory is charged to the exchange's `Hold` as it is
buffered; once the answer is normalized the charge becomes the size of the `Completion` kept.

Each answer is read by its dialect's reader (`shadowtap.dialects.DIALECTS`): the primary's
in the route's dialect, a shadow's in its target's, so every scorer compares like with like.

Example (a shadow):
    reader = AnswerReader("small", pace, limits, hold, dialect="anthropic-messages")
    await reader.read(answer)             # returns when the answer ended or was cut
    answer.release()                      # its connection kept only if read whole
    completion = await reader.completion()
"""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from dataclasses import dataclass
from typing import cast

from shadowtap.budget import TURN_S, Hold, Pace, Turn
from shadowtap.completion import Completion
from shadowtap.dialects import DIALECTS, Assembler
from shadowtap.dialects.tables import OPENAI_CHAT
from shadowtap.normalize import json_values_bound
from shadowtap.upstream import Answer

SLICE_BYTES = 4096  # parsed at once: worst case (tiny SSE events) ~1 ms, typical ~0.1 ms
COMPLETION_OVERHEAD = 512  # the Completion object and its small fields, beside its strings
# What the primary's side copy holds for a chunk besides its payload: the bytes object's header,
# the (chunk, arrival) tuple, the float and the list's slot (~122 bytes on 64-bit CPython).
# Charged with each chunk, so a stream relayed in tiny chunks cannot hold many times
# `max_held_bytes` (one byte a chunk used to be charged for ~120 held).
HELD_PER_CHUNK = 128


@dataclass(frozen=True, slots=True)
class AnswerLimits:
    max_bytes: int  # decoded bytes read from one answer (`sampling.max_answer_bytes`)


def completion_bytes(completion: Completion) -> int:
    """What a normalized answer keeps in memory: its strings (exactly) plus a fixed overhead."""
    size = COMPLETION_OVERHEAD
    for text in (completion.text, completion.error, completion.finish_reason):
        if text is not None:
            size += sys.getsizeof(text)
    for call in completion.tool_calls:
        size += sys.getsizeof(call.name) + sys.getsizeof(call.arguments) + COMPLETION_OVERHEAD
    for vector in completion.embeddings or ():
        size += sys.getsizeof(vector)  # an array: its buffer included
    return size


class AnswerReader:
    """Reads one answer into a `Completion`; see the module docstring for the two modes.

    `cut` names the bound that stopped the reading, if one did: "size" (`max_bytes`),
    "memory" (the exchange's hold could not grow) — the caller counts it.
    """

    def __init__(
        self,
        target: str,
        pace: Pace,
        limits: AnswerLimits,
        hold: Hold | None = None,
        dialect: str = OPENAI_CHAT,
    ) -> None:
        self.target = target
        self.dialect = DIALECTS[dialect]
        self.started = time.perf_counter()  # a shadow resets it when its request is sent
        self.finished: float | None = None
        self.status: int | None = None
        self.ttft_s: float | None = None
        self.error: str | None = None
        self.cut: str | None = None
        self._limits = limits
        self._pace = pace
        self._hold = hold
        self._held = 0  # bytes this reader charged to the hold
        self._assembler: Assembler | None = None
        self._buffer = bytearray()  # a JSON answer, decoded
        self._values = 0  # an upper bound on the JSON values in `_buffer` (counted per slice)
        self._decoder: zlib._Decompress | None = None
        self.decoded = 0  # bytes read (after decompression)
        self._wire: list[tuple[bytes, float]] = []  # pushed chunks not yet parsed
        self._wire_bytes = 0

    # -- the answer's head --------------------------------------------------------------------
    def begin(self, status: int, content_type: str, encoding: str) -> None:
        self.status = status
        if content_type.lower().startswith("text/event-stream"):
            self._assembler = self.dialect.assembler()
        encoding = encoding.lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            self._decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
        elif encoding not in ("", "identity"):
            self.error = f"cannot read a {encoding}-encoded answer"

    @property
    def stopped(self) -> bool:
        return self.error is not None or self.cut is not None

    # -- push: the primary's side copy ----------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """Keep a relayed chunk for later (cheap: no decoding, no parsing on the relay path)."""
        if self.stopped or not chunk:
            return
        if self._wire_bytes + len(chunk) > self._limits.max_bytes:
            self._stop("size")
            return
        if not self._charge(len(chunk) + HELD_PER_CHUNK):
            return
        self._wire.append((chunk, time.perf_counter()))
        self._wire_bytes += len(chunk)

    def fail(self, error: str) -> None:
        self.error = self.error or error

    def finish(self) -> None:
        """The answer is over (or abandoned): latency ends here, not when it is normalized."""
        if self.finished is None:
            self.finished = time.perf_counter()

    # -- pull: a shadow's answer ----------------------------------------------------------------
    async def read(self, answer: Answer) -> None:
        """Read `answer` until it ends or is cut. Its opener lets it go after: a connection
        left with unread bytes (an endless answer's) is dropped then, not kept."""
        self.begin(
            answer.status,
            answer.headers.get("Content-Type", ""),
            answer.headers.get("Content-Encoding", ""),
        )
        while not self.stopped:
            chunk = await answer.next_chunk()
            if not chunk:
                break
            arrived = time.perf_counter()
            if not self._pace.read_now(len(chunk)):
                await self._pace.read(len(chunk))  # over the byte rate: wait before reading on
            await self._digest(chunk, arrived)
        self.finish()

    # -- both -----------------------------------------------------------------------------------
    async def completion(self) -> Completion:
        """Parse what is left (the pushed copy), normalize, and keep only what is needed."""
        wire, self._wire = self._wire, []
        wire.reverse()  # popped as parsed: the copy is let go while the parsed buffer grows
        # A turn lives within one chunk, and a relayed stream is thousands of small ones, each
        # parsed well within `TURN_S`: without this, the whole copy ran without a yield.
        since = time.perf_counter()
        while wire:
            chunk, arrived = wire.pop()
            if not self.stopped:
                await self._digest(chunk, arrived)
                if time.perf_counter() - since >= TURN_S:
                    await asyncio.sleep(0)
                    since = time.perf_counter()
            self._release(len(chunk) + HELD_PER_CHUNK)
        self._wire_bytes = 0
        if self.dialect.off_loop:
            # Held bytes stay charged while the thread parses; it owns the buffer meanwhile.
            completion = await asyncio.to_thread(self._normalize)
        else:
            with self._pace.turn_now() or await self._pace.turn() as turn:
                turn.add(self.decoded)  # the final parse reads at most all of it
                completion = self._normalize()
        self._release(self._held)
        self._charge(completion_bytes(completion), force=True)
        self._buffer = bytearray()
        self._assembler = None
        return completion

    def _normalize(self) -> Completion:
        latency = (self.finished or time.perf_counter()) - self.started
        if self.status is None:
            return Completion(error=self.error or "no answer", latency_s=latency)
        # Read once: off the loop, `abandon` may drop them meanwhile (a timeout).
        assembler, buffer = self._assembler, self._buffer
        if assembler is not None:
            completion = assembler.finish(self.status)
        else:
            # The buffer itself, not a bytes() copy of the whole answer: the parsers only read
            # it (orjson, len, count, strip), which a bytearray does as bytes do.
            body = cast(bytes, buffer)
            completion = self.dialect.completion_from_json(body, self.status, self._values)
        completion.latency_s = latency
        completion.ttft_s = self.ttft_s
        if self.cut == "size":
            completion.error = f"answer cut at {self._limits.max_bytes} bytes (max_answer_bytes)"
        elif self.cut == "memory":
            completion.error = "answer cut: shadow memory budget full (max_held_bytes)"
        elif self.error is not None:
            completion.error = self.error
        return completion

    async def _digest(self, chunk: bytes, arrived: float) -> None:
        """Decode and parse one wire chunk (up to hundreds of kilobytes) slice by slice, in
        turns of the target's pace that end after `TURN_S`, yielding to the loop between."""
        decoder = self._decoder
        turn: Turn | None = None
        try:
            for start in range(0, len(chunk), SLICE_BYTES):
                data = chunk[start : start + SLICE_BYTES]  # never re-copy the rest of the chunk
                while data and not self.stopped:
                    if decoder is not None:
                        # Bounded output: a gzip bomb expands a slice at a time, never at once.
                        try:
                            piece = decoder.decompress(data, SLICE_BYTES)
                        except zlib.error:
                            self.error = "answer could not be decompressed"
                            return
                        data = decoder.unconsumed_tail
                    else:
                        piece, data = data, b""
                    if not piece:
                        continue
                    self.decoded += len(piece)
                    if self.decoded > self._limits.max_bytes:
                        self._stop("size")
                        return
                    if turn is None:
                        turn = self._pace.turn_now() or await self._pace.turn()
                    turn.add(len(piece))
                    self._parse(piece, arrived)
                    if turn.elapsed() >= TURN_S:
                        turn.end()
                        turn = None
                        await asyncio.sleep(0)  # let the primary's callbacks run
        finally:
            if turn is not None:
                turn.end()

    def _parse(self, piece: bytes, arrived: float) -> None:
        # Charged as decoded bytes: an upper bound of what the parser keeps (the text of an
        # SSE stream is less than its events), settled to the Completion's size at the end.
        if not self._charge(len(piece)):
            return
        assembler = self._assembler
        if assembler is not None:
            if assembler.feed(piece) and self.ttft_s is None:
                self.ttft_s = arrived - self.started
            return
        # A JSON answer is kept whole for one parse at the end; counting its values now (a
        # slice at a time) tells then whether that parse is small enough for the loop.
        self._buffer += piece
        self._values += json_values_bound(piece)

    def abandon(self) -> None:
        """The answer will never be normalized (a timeout, a failure): give its bytes back."""
        self._wire = []
        self._buffer = bytearray()
        self._assembler = None
        self._release(self._held)

    def _charge(self, size: int, *, force: bool = False) -> bool:
        if self._hold is None:
            return True
        if force:
            self._hold.force(size)
        elif not self._hold.grow(size):
            self._stop("memory")
            return False
        self._held += size
        return True

    def _release(self, size: int) -> None:
        size = min(size, self._held)
        if self._hold is not None and size > 0:
            self._hold.shrink(size)
            self._held -= size

    def _stop(self, bound: str) -> None:
        if self.cut is None:
            self.cut = bound
