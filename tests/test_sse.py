"""shadowtap.sse: the incremental `text/event-stream` decoder, on its own.

The decoder must give the same events however the network cuts the bytes: mid-line, mid-UTF-8
character, between the CR and the LF of a line end. A short reference decoder written straight
from the WHATWG rules (whole input, one line at a time) is the oracle.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st
from shadowtap.sse import ServerSentEvent, SSEDecoder

LINE_END = re.compile(rb"\r\n|\r|\n")


def reference(stream: bytes) -> tuple[list[ServerSentEvent], ServerSentEvent | None]:
    """Events of a whole stream per the spec, plus the event still open at the end (which
    `SSEDecoder.close` hands back); a last line without its line end still counts."""
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    events: list[ServerSentEvent] = []
    data: list[bytes] = []
    event_type: str | None = None
    last_id: str | None = None
    *lines, unfinished = LINE_END.split(stream)  # unfinished: after the last line end
    for line in [*lines, unfinished] if unfinished else lines:
        if not line:
            if data:
                events.append(ServerSentEvent(b"\n".join(data), event_type or "message", last_id))
            data, event_type = [], None
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event_type = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            last_id = value.decode("utf-8", "replace")
    tail = ServerSentEvent(b"\n".join(data), event_type or "message", last_id) if data else None
    return events, tail


def decode(chunks: list[bytes]) -> tuple[list[ServerSentEvent], ServerSentEvent | None]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, decoder.close()


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def one_byte_chunks(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


# Lines an LLM stream (or a hostile upstream) sends: fields with and without the space,
# comments, blank lines, ids with NUL, multi-byte text, stray CRs inside a value are impossible
# (a CR ends the line), so values are drawn without CR and LF.
VALUE = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
TEXT = st.text(alphabet='aé🎉 :{}"\0', max_size=8).map(str.encode)
LINE = st.one_of(
    st.tuples(
        st.sampled_from([b"data", b"event", b"id", b"retry"]),
        st.sampled_from([b":", b": ", b""]),
        st.one_of(VALUE, TEXT),
    ).map(lambda t: t[0] + (t[1] + t[2] if t[1] else b"")),
    st.just(b""),
    st.just(b": keep-alive"),
)
END = st.sampled_from([b"\n", b"\r\n", b"\r"])
STREAM = st.lists(st.tuples(LINE, END), max_size=25).map(
    lambda lines: b"".join(line + end for line, end in lines)
)


@given(STREAM, st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_gives_the_reference_s_events(stream: bytes, cuts: list[int]) -> None:
    assert decode(cut(stream, cuts)) == reference(stream)


@given(STREAM)
def test_byte_by_byte_gives_the_reference_s_events(stream: bytes) -> None:
    assert decode(one_byte_chunks(stream)) == reference(stream)


def test_crlf_split_between_two_chunks_is_one_line_end() -> None:
    # Had the LF after a chunk-final CR counted as a second, empty line, it would dispatch
    # "a" early and split one event in two.
    events, tail = decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert (events, tail) == ([ServerSentEvent(b"a\nb")], None)


def test_a_chunk_that_is_only_the_lf_of_a_crlf_does_not_swallow_the_next_lf() -> None:
    # The LF completing "a\r" arrives alone; the LF after it is the blank line that ends the
    # event. Swallowing it too merged "a" and "b" into one event.
    events, tail = decode([b"data: a\r", b"\n", b"\n", b"data: b\n\n"])
    assert (events, tail) == ([ServerSentEvent(b"a"), ServerSentEvent(b"b")], None)
    # An empty read between the CR and its LF changes nothing.
    assert decode([b"data: a\r", b"", b"\n", b"\n"]) == ([ServerSentEvent(b"a")], None)


def test_cr_lf_and_crlf_each_end_a_line() -> None:
    for end in (b"\n", b"\r", b"\r\n"):
        stream = b"data: x" + end + b"data: y" + end + end
        assert decode([stream]) == ([ServerSentEvent(b"x\ny")], None), end


def test_comments_retry_and_an_event_without_data_dispatch_nothing() -> None:
    decoder = SSEDecoder()
    stream = b": keep-alive\n\nretry: 100\n\nevent: ping\n\n:\n\ndata: after\n\n"
    assert decoder.feed(stream) == [ServerSentEvent(b"after")]  # "ping" did not leak into it
    assert decoder.unexpected_line is None


def test_multi_line_data_is_joined_with_lf_and_keeps_its_inner_spaces() -> None:
    stream = b'data: {"a":\ndata:  1}\ndata\ndata:\n\n'
    assert decode([stream]) == ([ServerSentEvent(b'{"a":\n 1}\n\n')], None)


def test_the_id_outlives_its_event_and_an_id_with_nul_is_ignored() -> None:
    stream = b"id: 7\ndata: a\n\ndata: b\n\nid: 8\0\ndata: c\n\nid\ndata: d\n\n"
    events, _ = decode([stream])
    assert [e.id for e in events] == ["7", "7", "7", ""]


def test_a_utf8_character_split_across_chunks_arrives_whole() -> None:
    stream = "data: wörld 🎉\n\n".encode()
    split = stream.index("🎉".encode()) + 2  # inside the four bytes of the emoji
    assert decode([stream[:split], stream[split:]]) == (
        [ServerSentEvent("wörld 🎉".encode())],
        None,
    )


def test_a_bom_is_dropped_only_at_the_start_of_the_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb") == []
    assert decoder.feed(b"\xbfdata: a\n\n") == [ServerSentEvent(b"a")]
    assert decoder.feed(b"\xef\xbb\xbfdata: b\n\n") == []  # a field named BOM+"data" later on
    assert decoder.unexpected_line == b"\xef\xbb\xbfdata: b"


def test_a_huge_line_in_small_chunks_is_one_event() -> None:
    payload = b"x" * (4 << 20)
    stream = b"data: " + payload + b"\n\n"
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(stream), 4096):
        events += decoder.feed(stream[i : i + 4096])
    assert events == [ServerSentEvent(payload)]
    assert decoder.close() is None


def test_an_unknown_field_is_kept_once_and_a_cut_off_last_line_is_not_one() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"hello world\nfoo: bar\n")
    assert decoder.unexpected_line == b"hello world"  # the first one, not the last
    cut_off = SSEDecoder()
    cut_off.feed(b"data: a\n\nda")
    assert cut_off.close() is None
    assert cut_off.unexpected_line is None


def test_close_returns_an_event_left_open_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: done\ndata: last") == []
    assert decoder.close() == ServerSentEvent(b"last", event="done")
    assert SSEDecoder().close() is None
