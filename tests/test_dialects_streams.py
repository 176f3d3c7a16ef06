"""Every dialect's stream reader, on every recorded-shape SSE fixture: however the network
splits the stream, the Completion is the same and the first token is flagged once, at the
same byte; a stream cut anywhere never raises."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shadowtap.completion import Completion
from shadowtap.dialects import DIALECTS

from tests.examples import examples

FIXTURES = Path(__file__).parent / "fixtures" / "dialects"
STREAMS = sorted(
    (path.parent.name, path.name)
    for path in FIXTURES.glob("*/*.sse")
    if path.parent.name in DIALECTS
)


def read(chunks: list[bytes], dialect: str) -> tuple[Completion, int | None]:
    """The Completion, and the byte offset at which the flagged chunk ended (None: no flag)."""
    assembler = DIALECTS[dialect].assembler()
    flagged_at: int | None = None
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        if assembler.feed(chunk):
            assert flagged_at is None, "the first token was flagged twice"
            flagged_at = fed
    return assembler.finish(200), flagged_at


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def test_every_dialect_with_a_stream_reader_has_fixtures() -> None:
    assert {dialect for dialect, _ in STREAMS} >= {
        "openai-chat",
        "anthropic-messages",
        "openai-responses",
    }
    assert len(STREAMS) >= 6


_settings = settings(
    max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize(("dialect", "name"), STREAMS)
def test_byte_by_byte_is_the_same_as_whole(dialect: str, name: str) -> None:
    body = (FIXTURES / dialect / name).read_bytes()
    whole, whole_flag = read([body], dialect)
    single, single_flag = read([body[i : i + 1] for i in range(len(body))], dialect)
    assert single == whole
    assert (single_flag is None) == (whole_flag is None)


@pytest.mark.parametrize(("dialect", "name"), STREAMS)
@_settings
@given(data=st.data())
def test_any_chunking_gives_the_same_completion(
    dialect: str, name: str, data: st.DataObject
) -> None:
    body = (FIXTURES / dialect / name).read_bytes()
    whole, _ = read([body], dialect)
    # Fed one byte at a time, the flag marks the exact byte that completed the first token.
    first_token_at = read([body[i : i + 1] for i in range(len(body))], dialect)[1]
    chunks = split_at(body, data.draw(st.lists(st.integers(0, len(body)), max_size=30)))
    completion, flagged_at = read(chunks, dialect)
    assert completion == whole
    if first_token_at is None:
        assert flagged_at is None
    else:
        assert flagged_at is not None
        ends = list(itertools.accumulate(map(len, chunks)))
        flagged = chunks[ends.index(flagged_at)]
        assert flagged_at - len(flagged) < first_token_at <= flagged_at


@pytest.mark.parametrize(("dialect", "name"), STREAMS)
@_settings
@given(cut=st.integers(0, 10**6))
def test_a_stream_cut_anywhere_never_raises(dialect: str, name: str, cut: int) -> None:
    body = (FIXTURES / dialect / name).read_bytes()
    cut %= len(body) + 1
    completion, _ = read([body[:cut]], dialect)
    whole, _ = read([body], dialect)
    assert completion.status == 200
    if cut < len(body.rstrip()):
        assert completion.error is not None or completion == whole
    assert (whole.text or "").startswith(completion.text or "")
