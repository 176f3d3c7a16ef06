"""A replayed answer is stored under `storage.max_text_bytes` as a live one is: cut, marked
and left out of export, never kept whole (DuckDB keeps a long string in blocks it cannot
evict; see shadowtap.recorder.caps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shadowtap.config import parse_config
from shadowtap.recorder import open_readonly
from shadowtap.recorder.caps import CUT_TEXT
from shadowtap.replay.run import ReplayOptions, ReplayRunner

from tests.replaying import NOWHERE, SCORERS, Candidate, record_synthetic, serve

N = 6
CAP = 4096


async def test_a_replayed_answer_longer_than_the_cap_is_stored_cut_and_marked(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    record_synthetic(db, N)
    long_answer = "word " * 10_000  # 50 kB, past the cap; the recorded requests are not
    url = await serve(aiohttp_server, Candidate(long_answer))
    config = parse_config(
        {
            "primary": {"url": NOWHERE},
            "candidates": {"new": {"url": url, "timeout_s": 60}},
            "scorers": SCORERS,
            "storage": {"path": str(db), "bodies": "full", "max_text_bytes": CAP},
        },
        {},
    )
    summary = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert summary.complete and summary.recorded == N

    con = open_readonly(db)
    texts = [
        t for (t,) in con.execute("SELECT text FROM responses WHERE target = 'new'").fetchall()
    ]
    con.close()
    assert len(texts) == N
    for text in texts:
        assert len(text.encode()) <= CAP
        assert CUT_TEXT.search(text), text[-80:]
        assert text.startswith("word word")
