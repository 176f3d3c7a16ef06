"""What a replay sends and what it skips: only requests stored as the client sent them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from shadowtap.replay.run import ReplayError, ReplayOptions, ReplayRunner
from shadowtap.replay.source import Selection, page_bounds

from tests.conftest import StartFake, StartShadowtap
from tests.replaying import record_traffic, replay_config

MAIL = {"role": "system", "content": "Copy the answer to ada@example.org please."}


async def test_redacted_requests_are_skipped_and_counted_unless_allowed_then_marked(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    await record_traffic(
        start_fake, start_shadowtap, db, 4, bodies="redacted", extra_messages=[MAIL]
    )
    primary = await record_traffic(start_fake, start_shadowtap, db, 5, bodies="redacted")
    candidate = await start_fake()
    config = replay_config(primary, {"new": candidate.url})
    summary = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert summary.counts.answered == 5 and summary.counts.skipped == {"redacted": 4}
    assert "4 redacted request or primary answer" in summary.paragraph()
    assert not any("[REDACTED" in r.body.decode() for r in candidate.chat_requests())

    allowed = ReplayOptions("new", Selection(allow_redacted=True), progress=False)
    summary = await ReplayRunner(config, allowed, db).run()
    assert summary.counts.answered == 4 and summary.counts.skipped == {"answered": 5}
    sent = [r.json["messages"][0]["content"] for r in candidate.chat_requests()[5:]]
    assert sent == ["Copy the answer to [REDACTED:email] please."] * 4
    con = duckdb.connect(str(db), read_only=True)
    marks = con.execute(
        "SELECT source, count(*) FROM responses WHERE target = 'new' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert marks == [("replay", 5), ("replay-redacted", 4)]


async def test_without_stored_bodies_nothing_is_sent(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, 3, bodies="none")
    candidate = await start_fake()
    config = replay_config(primary, {"new": candidate.url})
    summary = await ReplayRunner(config, ReplayOptions("new", progress=False), db).run()
    assert summary.counts.planned == 0 and summary.counts.skipped == {"no_body": 3}
    assert candidate.chat_requests() == []


async def test_window_sample_and_limit_choose_the_same_requests_every_time(
    start_fake: StartFake, start_shadowtap: StartShadowtap, tmp_path: Path
) -> None:
    db = tmp_path / "shadowtap.duckdb"
    primary = await record_traffic(start_fake, start_shadowtap, db, 12)
    first, second = await start_fake(), await start_fake()
    config = replay_config(primary, {"a": first.url, "b": second.url})
    sample = ReplayOptions("a", Selection(sample=5, seed=3), progress=False)
    assert (await ReplayRunner(config, sample, db).run()).counts.answered == 5
    again = ReplayOptions("b", Selection(sample=5, seed=3), progress=False)
    assert (await ReplayRunner(config, again, db).run()).counts.answered == 5
    asked = {r.json["messages"][-1]["content"] for r in first.chat_requests()}
    assert asked == {r.json["messages"][-1]["content"] for r in second.chat_requests()}
    # The same sample, resumed: nothing more (the sample is drawn among done ones too).
    assert (await ReplayRunner(config, sample, db).run()).counts.attempts == 0
    oldest = ReplayOptions("a", Selection(limit=7), progress=False)
    summary = await ReplayRunner(config, oldest, db).run()
    assert summary.counts.planned + summary.counts.skipped["answered"] == 7
    future = ReplayOptions("a", Selection(route="/v1/other"), progress=False)
    assert (await ReplayRunner(config, future, db).run()).counts.planned == 0


async def test_a_missing_file_is_refused_not_created(tmp_path: Path) -> None:
    from shadowtap.config import parse_config

    config = parse_config(
        {
            "primary": {"url": "http://127.0.0.1:9"},
            "candidates": {"new": {"url": "http://127.0.0.1:9"}},
        },
        {},
    )
    with pytest.raises(ReplayError, match="does not exist"):
        ReplayRunner(config, ReplayOptions("new"), tmp_path / "nope.duckdb")
    assert not (tmp_path / "nope.duckdb").exists()


def test_pages_are_bounded_in_rows_and_in_body_bytes() -> None:
    assert page_bounds([10] * 5, max_rows=2, max_chars=1000) == [(0, 2), (2, 4), (4, 5)]
    # Two 10 MB bodies never share a 16 MB page; a single one larger than it still goes alone.
    mb = 1 << 20
    assert page_bounds([10 * mb, 10 * mb, 20 * mb, 1], max_rows=200, max_chars=16 * mb) == [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
    ]
    assert page_bounds([]) == []
