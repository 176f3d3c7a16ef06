"""The openai-chat answer reader and shadowtap.sse: answers (JSON or SSE in any chunking) →
Completion, and the bound on one JSON parse (shadowtap.normalize)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shadowtap.completion import Completion, ToolCall
from shadowtap.dialects.openai_chat_answer import ChatStreamAssembler as StreamAssembler
from shadowtap.dialects.openai_chat_answer import completion_from_json
from shadowtap.normalize import MAX_JSON_VALUES
from shadowtap.sse import ServerSentEvent, SSEDecoder

from tests.examples import examples

# --- fixtures shaped exactly like api.openai.com answers ---------------------------------

CHAT_JSON = b"""{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-2024-08-06",
  "choices": [{
    "index": 0,
    "message": {"role": "assistant", "content": "Hello! How can I assist you today?",
                "refusal": null, "annotations": []},
    "logprobs": null,
    "finish_reason": "stop"
  }],
  "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}},
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"""

TOOLS_JSON = b"""{
  "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1699896916,
  "model": "gpt-4o-mini",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_1", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\\"location\\": \\"Paris\\"}"}},
      {"id": "call_2", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\\"location\\": \\"Tokyo\\"}"}}
    ]}, "logprobs": null, "finish_reason": "tool_calls"}],
  "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
}"""

_CHUNK = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini"'
CHAT_STREAM = (
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"",'
    '"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    ": keep-alive\n\n"
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{"content":"Hello"}},"logprobs":null,'
    '"finish_reason":null}],"usage":null}\n\n'
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{"content":" wörld 🎉"}},"logprobs":null,'
    '"finish_reason":null}],"usage":null}\n\n'
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{}},"logprobs":null,'
    '"finish_reason":"stop"}],"usage":null}\n\n'
    f'data: {_CHUNK},"choices":[],"usage":{{"prompt_tokens":9,"completion_tokens":3,'
    '"total_tokens":12}}\n\n'
    "data: [DONE]\n\n"
).encode()

TOOL_STREAM = (
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{"role":"assistant","content":null,'
    '"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather",'
    '"arguments":""}}]},"finish_reason":null}]}\n\n'
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,'
    '"function":{"arguments":"{\\"loc"}}]},"finish_reason":null}]}\n\n'
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":1,"id":"call_b",'
    '"type":"function","function":{"name":"get_time","arguments":"{}"}}]},'
    '"finish_reason":null}]}\n\n'
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,'
    '"function":{"arguments":"ation\\": \\"Oslo\\"}"}}]},"finish_reason":null}]}\n\n'
    f'data: {_CHUNK},"choices":[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}]}}\n\n'
    "data: [DONE]\n\n"
).encode()


def assemble(chunks: list[bytes], status: int = 200) -> tuple[Completion, list[bool]]:
    assembler = StreamAssembler()
    flags = [assembler.feed(chunk) for chunk in chunks]
    return assembler.finish(status), flags


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- JSON --------------------------------------------------------------------------------


def test_chat_json() -> None:
    assert completion_from_json(CHAT_JSON, 200) == Completion(
        status=200,
        text="Hello! How can I assist you today?",
        finish_reason="stop",
        prompt_tokens=19,
        completion_tokens=10,
        response_model="gpt-4o-2024-08-06",
    )


def test_parallel_tool_calls_json() -> None:
    completion = completion_from_json(TOOLS_JSON, 200)
    assert completion.ok and completion.text is None
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == [
        ToolCall(name="get_weather", arguments='{"location": "Paris"}', id="call_1"),
        ToolCall(name="get_weather", arguments='{"location": "Tokyo"}', id="call_2"),
    ]


def test_content_parts_and_object_arguments() -> None:
    body = orjson.dumps(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "image_url", "image_url": {"url": "x"}},
                            {"type": "text", "text": "b"},
                        ],
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}],
                    },
                    "finish_reason": "stop",
                }
            ]
        }
    )
    completion = completion_from_json(body, 200)
    assert completion.text == "ab"
    assert completion.tool_calls == [ToolCall(name="f", arguments="{}", id="c")]


def test_refusal_becomes_text_json_and_stream() -> None:
    refusal = "I'm sorry, I can't assist with that request."
    body = {"choices": [{"index": 0, "message": {"content": None, "refusal": refusal}}]}
    assert completion_from_json(orjson.dumps(body), 200).text == refusal
    stream = b"".join(
        b'data: {"choices":[{"index":0,"delta":' + orjson.dumps(delta) + b"}]}\n\n"
        for delta in ({"role": "assistant", "content": None, "refusal": ""},
                      {"refusal": refusal[:10]}, {"refusal": refusal[10:]})
    ) + b"data: [DONE]\n\n"  # fmt: skip
    completion, flags = assemble(one_byte_chunks(stream))
    assert (completion.text, completion.error, flags.count(True)) == (refusal, None, 1)


def test_legacy_completions_json_and_empty_output() -> None:
    legacy = b'{"object":"text_completion","model":"gpt-3.5-turbo-instruct","choices":'
    legacy += b'[{"text":"\\n\\nThis is a test.","index":0,"finish_reason":"length"}]}'
    completion = completion_from_json(legacy, 200)
    assert (completion.text, completion.finish_reason) == ("\n\nThis is a test.", "length")
    empty = b'{"choices":[{"index":0,"message":{"role":"assistant","content":""}}]}'
    assert completion_from_json(empty, 200) == Completion(status=200, text="")


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"error":{"message":"Rate limit reached","type":"requests","code":null}}', 429,
         "Rate limit reached"),
        (b"<html>502 Bad Gateway</html>", 502, "HTTP 502"),
        (b"", 500, "HTTP 500"),
        (b'{"detail":"Not Found"}', 404, "HTTP 404"),
        (b'{"error":"model not loaded"}', 503, "model not loaded"),
        (b'{"error":{"message":"context too long"}}', 200, "context too long"),
        (b"<html>oops</html>", 200, "invalid response body: not JSON"),
        (b"  ", 200, "invalid response body: empty body"),
        (b"[1, 2]", 200, "invalid response body: not a JSON object"),
        (b'{"choices": []}', 200, "invalid response body: no choices"),
        (b'{"choices": [{"index": 0}]}', 200, "invalid response body: choices[0] has neither"),
        (b'{"choices":[{"message":{"content":5}}]}', 200, "invalid response body: content is"),
        (b'{"choices":[{"message":{"tool_calls":[1]}}]}', 200,
         "invalid response body: tool_calls[0] has no function name"),
    ],
)  # fmt: skip
def test_json_errors(body: bytes, status: int, error: str) -> None:
    completion = completion_from_json(body, status)
    assert completion.status == status
    assert completion.error is not None and completion.error.startswith(error)
    assert len(completion.error) < 200


# --- SSE decoder -------------------------------------------------------------------------


def test_sse_decoder_fields_per_spec() -> None:
    decoder = SSEDecoder()
    stream = (
        b"\xef\xbb\xbfdata: a\r\ndata:b\r\nid: 7\r\nretry: 10\r\n\r\n"
        b"event: ping\n\n"  # no data: not dispatched, and its type does not leak
        b"event: error\ndata\n\n"
        b"data: c\r\rdata: tail"
    )
    events = decoder.feed(stream)
    assert events == [
        ServerSentEvent(data=b"a\nb", id="7"),
        ServerSentEvent(data=b"", event="error", id="7"),
        ServerSentEvent(data=b"c", id="7"),
    ]
    assert decoder.close() == ServerSentEvent(data=b"tail", id="7")
    assert decoder.unexpected_line is None
    decoder.feed(b"hello world\n")
    assert decoder.unexpected_line == b"hello world"


# --- streams -----------------------------------------------------------------------------

CHAT_EXPECTED = Completion(
    status=200,
    text="Hello wörld 🎉",
    finish_reason="stop",
    prompt_tokens=9,
    completion_tokens=3,
    response_model="gpt-4o-mini",
)


def test_chat_stream_whole_and_byte_by_byte() -> None:
    assert assemble([CHAT_STREAM]) == (CHAT_EXPECTED, [True])
    completion, flags = assemble(one_byte_chunks(CHAT_STREAM))
    assert completion == CHAT_EXPECTED
    # The first token's event ends at the blank line after "Hello".
    assert flags.index(True) == CHAT_STREAM.index(b"\n\n", CHAT_STREAM.index(b"Hello")) + 1
    assert flags.count(True) == 1


def test_tool_call_stream_assembles_parallel_calls_by_index() -> None:
    completion, flags = assemble(one_byte_chunks(TOOL_STREAM.replace(b"\n", b"\r\n")))
    assert completion.error is None and completion.text is None
    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == [
        ToolCall(name="get_weather", arguments='{"location": "Oslo"}', id="call_a"),
        ToolCall(name="get_time", arguments="{}", id="call_b"),
    ]
    assert flags.count(True) == 1


def test_unicode_split_inside_characters() -> None:
    text = "é世🎉"
    event = b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'
    stream = event + b"data: [DONE]\n\n"
    start = stream.index("é".encode())
    for cut in range(start, start + len(text.encode()) + 1):
        assert assemble([stream[:cut], stream[cut:]])[0].text == text


def test_in_stream_error_event() -> None:
    stream = CHAT_STREAM.split(b"data: [DONE]")[0]
    stream += b'data: {"error":{"message":"The server had an error","type":"server_error"}}\n\n'
    completion, _ = assemble([stream])
    assert completion.error == "The server had an error"
    assert completion.text == "Hello wörld 🎉"
    anthropic_style = b'event: error\ndata: {"type":"overloaded"}\n\n'
    assert assemble([anthropic_style])[0].error == '{"type":"overloaded"}'
    assert assemble([b"event: error\ndata: overloaded\n\n"])[0].error == "overloaded"


def test_garbage_line_keeps_what_was_assembled() -> None:
    stream = CHAT_STREAM.replace(b": keep-alive", b"<html>Bad Gateway</html>")
    completion, _ = assemble([stream])
    assert completion.error == "invalid stream: unexpected line <html>Bad Gateway</html>"
    assert completion.text == CHAT_EXPECTED.text
    completion, _ = assemble([CHAT_STREAM.replace(b"data: [DONE]", b"data: {nope")])
    assert completion.error == "invalid stream: data is not JSON: {nope"


def test_stream_cut_before_done_keeps_text() -> None:
    cut_mid_event = CHAT_STREAM[: CHAT_STREAM.index(b'"finish_reason":"stop"')]
    completion, _ = assemble([cut_mid_event])
    assert completion.error == "stream ended before [DONE]"
    assert completion.text == "Hello wörld 🎉"
    assert assemble([])[0] == Completion(status=200, error="stream ended before [DONE]")
    # An unterminated but complete last line still counts: nothing was lost.
    assert assemble([CHAT_STREAM.rstrip(b"\n")])[0] == CHAT_EXPECTED


def test_events_after_done_are_ignored() -> None:
    stream = CHAT_STREAM + b'data: {"choices":[{"index":0,"delta":{"content":"late"}}]}\n\n'
    assert assemble([stream])[0] == CHAT_EXPECTED


def test_only_first_choice_counts() -> None:
    other = b'data: {"choices":[{"index":1,"delta":{"content":"other"}}]}\n\n'
    assert assemble([other + CHAT_STREAM])[0] == CHAT_EXPECTED


def test_empty_output_stream_has_no_token() -> None:
    stream = (
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    completion, flags = assemble(one_byte_chunks(stream))
    assert completion == Completion(status=200, text="", finish_reason="length")
    assert not any(flags)


def test_legacy_completions_stream() -> None:
    stream = (
        b'data: {"object":"text_completion","model":"m","choices":[{"text":"Hi","index":0,'
        b'"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"text":" there","index":0,"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert assemble([stream]) == (
        Completion(status=200, text="Hi there", finish_reason="stop", response_model="m"),
        [True],
    )


def test_non_sse_body_fed_to_assembler_is_read_as_json() -> None:
    # An upstream that rejects the request answers JSON, whatever `stream` said.
    error = b'{"error":{"message":"Invalid model","type":"invalid_request_error"}}'
    assert assemble([error[:10], error[10:]], status=400)[0] == Completion(
        status=400, error="Invalid model"
    )
    assert assemble([CHAT_JSON])[0] == completion_from_json(CHAT_JSON, 200)
    assert assemble([CHAT_STREAM], status=500)[0].error == "HTTP 500"


# --- properties --------------------------------------------------------------------------


@dataclass
class GeneratedStream:
    body: bytes
    expected: Completion
    first_token_at: int | None  # byte offset at which the first token's event is complete


_texts = st.text(max_size=12)  # hypothesis's default alphabet covers all planes, no surrogates
_tool_calls = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.lists(_texts, max_size=4)), max_size=3
)


@st.composite
def streams(draw: st.DrawFn) -> GeneratedStream:
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"])).encode()
    multiline = draw(st.booleans())  # pretty-printed JSON: one event, many data: lines
    model = draw(st.text(min_size=1, max_size=10))
    deltas = draw(st.lists(_texts, max_size=6))
    calls = draw(_tool_calls)
    usage = draw(st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)))
    finish = draw(st.sampled_from(["stop", "length", "tool_calls"]))

    payloads: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    payloads += [{"content": text} for text in deltas]
    for index, (name, fragments) in enumerate(calls):
        opening = {"index": index, "id": f"call_{index}", "type": "function"}
        opening["function"] = {"name": name, "arguments": ""}
        payloads.append({"tool_calls": [opening]})
        payloads += [
            {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            for fragment in fragments
        ]
    events = [
        {"model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        for delta in payloads
    ]
    events.append({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        events.append({"model": model, "choices": [], "usage": counts})
    has_token = [bool(p.get("content")) or "tool_calls" in p for p in payloads]

    body = b""
    first_token_at = None
    for index, event in enumerate(events):
        if draw(st.booleans()):
            body += b": keep-alive" + eol + eol
        lines = orjson.dumps(event, option=orjson.OPT_INDENT_2 if multiline else 0).split(b"\n")
        body += b"".join(b"data: " + line + eol for line in lines)
        if index < len(has_token) and has_token[index] and first_token_at is None:
            first_token_at = len(body)  # the blank line's first byte completes the event
        body += eol
    body += b"data: [DONE]" + eol + eol
    expected = Completion(
        status=200,
        text="".join(deltas),
        tool_calls=[
            ToolCall(name=name, arguments="".join(fragments), id=f"call_{index}")
            for index, (name, fragments) in enumerate(calls)
        ],
        finish_reason=finish,
        prompt_tokens=usage[0] if usage else None,
        completion_tokens=usage[1] if usage else None,
        response_model=model,
    )
    return GeneratedStream(body, expected, first_token_at)


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


_settings = settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_settings
@given(streams(), st.data())
def test_any_chunking_gives_the_same_completion(
    stream: GeneratedStream, data: st.DataObject
) -> None:
    body = stream.body
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    for chunks in ([body], split_at(body, cuts), one_byte_chunks(body)):
        completion, flags = assemble(chunks)
        assert completion == stream.expected
        if stream.first_token_at is None:
            assert not any(flags)
            continue
        assert flags.count(True) == 1
        end = sum(len(chunk) for chunk in chunks[: flags.index(True) + 1])
        assert end - len(chunks[flags.index(True)]) <= stream.first_token_at < end


@_settings
@given(streams(), st.integers(0, 10**6))
def test_a_stream_cut_anywhere_never_raises_and_keeps_a_prefix(
    stream: GeneratedStream, cut: int
) -> None:
    cut %= len(stream.body) + 1
    completion = assemble([stream.body[:cut]])[0]
    # Complete once "[DONE]" has arrived: the line ending and blank line after it are optional
    # (two bytes with LF endings, four with CRLF).
    done_at = stream.body.rindex(b"[DONE]") + len(b"[DONE]")
    if cut < done_at:
        assert completion.error == "stream ended before [DONE]"
    else:
        assert completion.error is None
    assert stream.expected.text is not None
    assert stream.expected.text.startswith(completion.text or "")


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["choices", "message", "delta", "content", "tool_calls", "function",
                         "index", "text", "usage", "error", "name", "arguments", "model"]),
        inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@_settings
@given(_json, st.sampled_from([200, 400]), st.binary(max_size=40))
def test_never_raises_on_arbitrary_input(value: object, status: int, noise: bytes) -> None:
    body = orjson.dumps(value)
    assert completion_from_json(body, status).status == status
    assert completion_from_json(noise, status).status == status
    sse = b"data: " + body + b"\n\n" + noise
    assert assemble([sse[:7], sse[7:]], status)[0].status == status


# --- bounds: one parse on the event loop stays a few milliseconds -----------------------


def test_a_body_with_too_many_json_values_is_not_parsed() -> None:
    flood = b'{"choices": [' + b"{}," * 60_000 + b"{}]}"  # 60k objects: ~3 ms and 5 MB parsed
    completion = completion_from_json(flood, 200)
    assert completion.error == "invalid response body: more than 50000 JSON values, not parsed"
    error = completion_from_json(flood, 500)
    assert error.error == "HTTP 500"
    long_text = orjson.dumps({"choices": [{"message": {"content": "x" * 500_000}}]})
    assert completion_from_json(long_text, 200).text == "x" * 500_000  # long, not complex


def test_a_known_value_count_is_trusted_without_counting_again() -> None:
    body = b'{"choices": [{"message": {"content": "' + b"a" * 200_000 + b'"}}]}'
    assert completion_from_json(body, 200, values=10).text == "a" * 200_000
    assert completion_from_json(body, 200, values=MAX_JSON_VALUES + 1).error is not None


def test_a_stream_event_too_large_to_parse_is_reported_not_parsed() -> None:
    assembler = StreamAssembler()
    assembler.feed(b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n')
    assembler.feed(b"data: [" + b"0," * 60_000 + b"0]\n\n")
    assembler.feed(b"data: [DONE]\n\n")
    completion = assembler.finish(200)
    assert completion.text == "ok"
    assert completion.error == "invalid stream: an event too large to parse (120003 bytes)"
