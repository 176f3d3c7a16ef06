"""The recorder's text cap and close attacked: multibyte characters and escapes at the cut of
JSON columns (still valid JSON for DuckDB's JSON type), `close_timeout_s` out of range or huge,
and a close while the keeper is degraded and backing off after a storage fault (bounded,
every queued exchange counted, the process exits 0). Real DuckDB files in tmp_path, the real
writer thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from shadowtap.completion import Completion, ToolCall
from shadowtap.config import ConfigError, StorageConfig, parse_config
from shadowtap.exchange import Score
from shadowtap.metrics import Metrics
from shadowtap.recorder import Recorder, open_readonly
from shadowtap.recorder.caps import cut_json

from tests.synthetic import synthetic_exchange

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 60.0  # not a speed bound: a hang fails instead of stalling the suite
# Two- to four-byte characters, a quote, a backslash, a newline and a control character (six
# bytes once escaped): every cut lands on some of them, whatever the cap.
AWKWARD = 'é€😀"\\\n\x01' * 1_000


def sample(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


def close_within_guard(recorder: Recorder, timeout_s: float | None = None) -> None:
    closer = threading.Thread(target=recorder.close, args=(timeout_s,))
    closer.start()
    closer.join(HANG_GUARD_S)
    assert not closer.is_alive(), "close() did not return"


@pytest.mark.parametrize("cap", [1024, 1025, 1026, 1027, 1028, 4099])
def test_json_columns_cut_among_multibyte_characters_and_escapes_stay_valid_json(
    tmp_path: Path, cap: int
) -> None:
    exchange = synthetic_exchange(1)
    exchange.request_body = orjson.dumps({"model": "m", "messages": [{"content": AWKWARD}]})
    exchange.request_json = None
    exchange.results["small"].completion = Completion(
        status=200, text=AWKWARD, tool_calls=[ToolCall(name="t", arguments=AWKWARD, id="c1")]
    )
    exchange.scores = [Score("small", "similarity", 0.5, detail={"quote": AWKWARD})]
    db = tmp_path / "caps.duckdb"
    recorder = Recorder(StorageConfig(path=str(db), max_text_bytes=cap), Metrics())
    recorder.start()
    assert recorder.record(exchange)
    close_within_guard(recorder)
    con = open_readonly(db)
    try:
        rows = con.execute(
            "SELECT json_valid(v), octet_length(encode(v::VARCHAR)), v::VARCHAR FROM ("
            " SELECT request_body AS v FROM exchanges UNION ALL"
            " SELECT tool_calls FROM responses WHERE target = 'small' UNION ALL"
            " SELECT detail FROM scores)"
        ).fetchall()
        typed = con.execute(
            "SELECT json_type(request_body) FROM exchanges UNION ALL"
            " SELECT json_type(detail) FROM scores"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 3
    for valid, size, value in rows:
        assert valid and size <= cap
        assert "[TRUNCATED: " in orjson.loads(value).__repr__()
    assert typed == [("VARCHAR",), ("VARCHAR",)]  # a marked string, never half an object


@pytest.mark.parametrize("value", [0, -1, "soon"])
def test_a_close_timeout_that_cannot_bound_the_close_stops_the_start(value: object) -> None:
    with pytest.raises(ConfigError, match="close_timeout_s"):
        parse_config(
            {"primary": {"url": "http://127.0.0.1:9"}, "storage": {"close_timeout_s": value}},
            {},
        )


def test_a_huge_close_timeout_returns_once_everything_is_written(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    config = StorageConfig(path=str(tmp_path / "a.duckdb"), close_timeout_s=1e9)
    recorder = Recorder(config, Metrics(registry))
    recorder.start()
    for i in range(50):
        assert recorder.record(synthetic_exchange(i))
    close_within_guard(recorder)
    assert sample(registry, "shadowtap_records_written_total") == 50
    assert sample(registry, "shadowtap_records_dropped_total") == 0


def degraded_recorder(path: Path, registry: CollectorRegistry) -> Recorder:
    """A recorder whose file cannot be opened (its folder is a regular file), backing off an
    hour before its next try: degraded for the whole test unless close() tries again."""
    recorder = Recorder(
        StorageConfig(path=str(path), close_timeout_s=5), Metrics(registry), retry_min_s=3600
    )
    recorder.start()
    assert recorder.health()["recording"] == "degraded"
    return recorder


def test_a_close_while_degraded_is_bounded_and_counts_every_queued_exchange(
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    registry = CollectorRegistry()
    recorder = degraded_recorder(tmp_path / "not-a-folder" / "a.duckdb", registry)
    for i in range(7):
        assert recorder.record(synthetic_exchange(i))
    close_within_guard(recorder)
    assert sample(registry, "shadowtap_records_written_total") == 0
    assert sample(registry, "shadowtap_records_dropped_total") == 7


def test_a_close_while_degraded_writes_what_is_queued_if_storage_is_back(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("")
    registry = CollectorRegistry()
    recorder = degraded_recorder(blocker / "a.duckdb", registry)
    for i in range(7):
        assert recorder.record(synthetic_exchange(i))
    blocker.unlink()
    blocker.mkdir()  # the storage is back while the keeper still backs off
    close_within_guard(recorder)
    assert sample(registry, "shadowtap_records_written_total") == 7
    assert sample(registry, "shadowtap_records_dropped_total") == 0
    con = open_readonly(blocker / "a.duckdb")
    try:
        assert con.execute("SELECT count(*) FROM exchanges").fetchone() == (7,)
    finally:
        con.close()


def test_a_process_closing_a_degraded_recorder_exits_0(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    script = textwrap.dedent(
        f"""
        from prometheus_client import CollectorRegistry
        from shadowtap.config import StorageConfig
        from shadowtap.metrics import Metrics
        from shadowtap.recorder import Recorder
        from tests.synthetic import synthetic_exchange

        registry = CollectorRegistry()
        path = {str(tmp_path / "not-a-folder" / "a.duckdb")!r}
        recorder = Recorder(StorageConfig(path=path), Metrics(registry), retry_min_s=3600)
        recorder.start()
        for i in range(3):
            recorder.record(synthetic_exchange(i))
        recorder.close()
        print(registry.get_sample_value("shadowtap_records_dropped_total"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "3.0"  # (the log lines go before it)


def test_a_secret_spanning_the_cut_is_scrubbed_before_it(tmp_path: Path) -> None:
    key = "sk-proj-CAPCANARY0123456789abcdefghij"
    cap = 128 * 1024
    filler = "x" * (2 * cap)

    def body(prompt: str) -> bytes:
        return orjson.dumps({"model": "m", "messages": [{"content": prompt}]})

    # Where the request body's cut falls, and the key placed so that it straddles it.
    kept = orjson.loads(cut_json(body(filler).decode(), cap)).partition("] ")[2]
    at = len(kept) - len(b'{"model":"m","messages":[{"content":"') - 17
    prompt = filler[:at] + key + filler[at:]
    # The test's premise: cut before scrubbing, half the key (which matches neither the key
    # nor its shape) would be kept.
    assert orjson.loads(cut_json(body(prompt).decode(), cap)).endswith(key[:17])
    exchange = synthetic_exchange(1)
    exchange.request_body = body(prompt)
    exchange.request_json = None
    exchange.credentials = (key,)
    db = tmp_path / "caps.duckdb"
    recorder = Recorder(StorageConfig(path=str(db), bodies="full", max_text_bytes=cap), Metrics())
    recorder.start()
    assert recorder.record(exchange)
    close_within_guard(recorder)
    con = open_readonly(db)
    try:
        [(stored,)] = con.execute("SELECT request_body::VARCHAR FROM exchanges").fetchall()
    finally:
        con.close()
    assert stored.startswith('"[TRUNCATED: ') and key[:8] not in stored
    assert key[:12].encode() not in db.read_bytes()
