"""Where a report's data comes from: a DuckDB file, a Parquet roll-up, or a running proxy.

Each source becomes a DuckDB connection with the same two relations, so one code path
(`shadowtap.report.build`) computes the report whatever the origin:

- `pairs`: the recorder's view (one row per request x non-primary target, `primary_*` and
  `candidate_*` columns side by side, `scores` MAP scorer -> score);
- `thresholds(scorer, threshold)`: each scorer's threshold as stored with its scores (empty
  when the source has no per-score rows, as the live API returns only pairs);
- `score_rows`: the `scores` table itself, when the source has it (`Source.has_score_rows`):
  per-response scores of the primary and each score's `detail` live only there;
- `unscored_pairs`, with score rows: `pairs` built by the recorder's own `create_pairs_view`
  over no score rows, so its `scores` MAP is empty and costs nothing. The report takes the
  scores from `score_rows` instead (`shadowtap.report.selection`), which at fleet size is
  several times cheaper than folding them into a MAP per pair.

Example: `build_report(open_db("shadowtap.duckdb"), GatesConfig())`.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import duckdb
from shadowtap.recorder import SchemaError, create_pairs_view, migrate, open_readonly
from shadowtap.recorder import parquet_relations as recorder_parquet_relations
from shadowtap.recorder.api import MAX_LIMIT

# The admin API pages through the pairs newest first, MAX_LIMIT at a time. A live report holds
# every row in memory, so it stops at URL_PAIRS_PER_TARGET per target and says so; complete
# reports over more data read the file or the Parquet roll-up.
URL_PAIRS_PER_TARGET = 200 * MAX_LIMIT
# Where `report --url` finds the admin token by default (never on the command line).
ADMIN_TOKEN_ENV = "SHADOWTAP_ADMIN_TOKEN"


class SourceError(Exception):
    """The source cannot be read; the message is one line meant for the user."""


@dataclass(frozen=True, slots=True)
class Tables:
    """The recorder's three tables as SQL relations: table names, or `read_parquet` queries."""

    exchanges: str
    responses: str
    scores: str


@dataclass(slots=True)
class Source:
    con: duckdb.DuckDBPyConnection
    description: str
    notes: tuple[str, ...] = ()
    tables: Tables | None = None  # the recorder's tables, when the source has them

    @property
    def has_score_rows(self) -> bool:
        return self.tables is not None


THRESHOLDS_SQL = """
CREATE OR REPLACE TEMPORARY VIEW thresholds AS
SELECT scorer, arg_max(threshold, request_id) AS threshold
FROM {scores} WHERE threshold IS NOT NULL GROUP BY scorer
"""
SCORE_ROWS_SQL = "CREATE OR REPLACE TEMPORARY VIEW score_rows AS SELECT * FROM {scores}"
UNSCORED = "unscored_pairs"


def _unscored(con: duckdb.DuckDBPyConnection, exchanges: str, responses: str, scores: str) -> None:
    create_pairs_view(
        con,
        exchanges,
        responses,
        f"(SELECT * FROM {scores} WHERE false)",
        name=UNSCORED,
        temporary=True,
    )


def open_db(path: str | Path) -> Source:
    """A DuckDB file written by the recorder, opened read-only (serve must be stopped)."""
    try:
        con = open_readonly(path)
    except SchemaError as error:
        raise SourceError(str(error)) from None
    except duckdb.Error as error:
        raise SourceError(f"cannot open {path}: {error}") from None
    con.execute(THRESHOLDS_SQL.format(scores="scores"))
    con.execute(SCORE_ROWS_SQL.format(scores="scores"))
    _unscored(con, "exchanges", "responses", "scores")
    return Source(con, f"DuckDB file {path}", tables=Tables("exchanges", "responses", "scores"))


def open_parquet(directory: str | Path) -> Source:
    """The Parquet roll-up (`<dir>/<table>/date=YYYY-MM-DD/*.parquet`) of one or many proxies."""
    base = Path(directory)
    missing = [t for t in ("exchanges", "responses", "scores") if not any(base.glob(f"{t}/*/*"))]
    if missing:
        raise SourceError(f"{directory}: no Parquet files under {', '.join(missing)}/date=*/")
    con = duckdb.connect()
    exchanges, responses, scores = recorder_parquet_relations(base)
    # The hive `date` column is a partition key, not part of the tables' contract.
    exchanges, responses, scores = (
        f"(SELECT * EXCLUDE (date) FROM {rel})" for rel in (exchanges, responses, scores)
    )
    try:
        create_pairs_view(con, exchanges, responses, scores, temporary=True)
        con.execute(THRESHOLDS_SQL.format(scores=scores))
        con.execute(SCORE_ROWS_SQL.format(scores=scores))
        _unscored(con, exchanges, responses, scores)
    except duckdb.Error as error:
        raise SourceError(f"cannot read Parquet under {directory}: {error}") from None
    return Source(con, f"Parquet under {directory}", tables=Tables(exchanges, responses, scores))


def _pairs_columns() -> dict[str, str]:
    """The pairs view's columns and types, taken from the recorder's own schema."""
    con = duckdb.connect()
    migrate(con)
    columns = {name: kind for name, kind, *_ in con.execute("DESCRIBE pairs").fetchall()}
    con.close()
    return columns


def from_pair_rows(
    rows: list[dict[str, Any]], description: str, thresholds: dict[str, float] | None = None
) -> Source:
    """Load pairs-view rows (as the admin API returns them) into an in-memory `pairs` table."""
    columns = _pairs_columns()
    con = duckdb.connect()
    with tempfile.NamedTemporaryFile("w", suffix=".ndjson", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({k: row.get(k) for k in columns}, default=str) + "\n")
        handle.flush()
        spec = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"
        try:
            con.execute(
                f"CREATE TEMPORARY TABLE pairs AS SELECT * FROM read_json(?, columns = {spec},"
                " format = 'newline_delimited')",
                [handle.name],
            )
        except duckdb.Error as error:
            raise SourceError(f"{description}: pairs do not match the schema: {error}") from None
    thresholds = {k: float(v) for k, v in (thresholds or {}).items() if v is not None}
    con.execute("CREATE TEMPORARY TABLE thresholds (scorer VARCHAR, threshold DOUBLE)")
    if thresholds:
        con.executemany("INSERT INTO thresholds VALUES (?, ?)", list(thresholds.items()))
    return Source(con, description)


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        # No redirects: the admin token must never follow a redirect to another address.
        async with session.get(url, allow_redirects=False) as response:
            if response.status in (401, 403):
                raise SourceError(
                    f"{url} answered HTTP {response.status}: the admin API needs the proxy's "
                    f"server.admin_token, read from ${ADMIN_TOKEN_ENV} (or --token-env NAME)"
                )
            if response.status != 200:
                raise SourceError(f"{url} answered HTTP {response.status}")
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
        raise SourceError(f"cannot read {url}: {error or type(error).__name__}") from None


@dataclass(slots=True)
class LivePairs:
    rows: list[dict[str, Any]]
    notes: list[str]
    thresholds: dict[str, float]


async def fetch_pairs(
    session: aiohttp.ClientSession,
    admin_url: str,
    since: datetime | None = None,
    page_size: int = MAX_LIMIT,
    max_pairs: int = URL_PAIRS_PER_TARGET,
) -> LivePairs:
    """The pairs of every target from a running proxy's admin API, and notes on what is cut.

    /api/summary names the targets; /api/pairs then pages through each target's pairs,
    newest first, up to `URL_PAIRS_PER_TARGET`.
    """
    base = admin_url.rstrip("/")
    window = {"since": since.isoformat()} if since is not None else {}
    summary = await _get_json(session, f"{base}/api/summary?{urlencode(window)}")
    if not isinstance(summary, dict) or not isinstance(summary.get("targets"), dict):
        raise SourceError(f'{base}/api/summary did not answer {{"targets": {{...}}}}')
    live = LivePairs([], [], {})
    for target in sorted(summary["targets"]):
        if target == "primary":
            continue
        query: dict[str, Any] = {**window, "target": target, "limit": page_size}
        read = 0
        while True:
            body = await _get_json(session, f"{base}/api/pairs?{urlencode(query)}")
            if not isinstance(body, dict) or not isinstance(body.get("pairs"), list):
                raise SourceError(f'{base}/api/pairs did not answer {{"pairs": [...]}}')
            live.rows.extend(body["pairs"])
            live.thresholds |= body.get("thresholds") or {}
            read += len(body["pairs"])
            if not body.get("next"):
                break
            if read >= max_pairs:
                live.notes.append(
                    f"live API: only the newest {read:,} pairs of {target} were read; "
                    "use --db or --parquet for all of them"
                )
                break
            query["cursor"] = body["next"]
    return live


def open_url(admin_url: str, since: datetime | None = None, token: str | None = None) -> Source:
    """Read pairs live from a running proxy, sending `token` as `Authorization: Bearer`.
    Blocking: from async code use `fetch_pairs` with a session that carries the header."""
    if not re.match(r"^https?://", admin_url):
        raise SourceError(f"--url must be an http(s) URL (got {admin_url!r})")
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def fetch() -> LivePairs:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            return await fetch_pairs(session, admin_url, since)

    live = asyncio.run(fetch())
    source = from_pair_rows(live.rows, f"live pairs from {admin_url}", live.thresholds)
    source.notes = tuple(live.notes)
    return source


def open_path(path: str | Path) -> Source:
    """A directory is a Parquet roll-up, a file is a DuckDB database."""
    return open_parquet(path) if Path(path).is_dir() else open_db(path)


RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`24h`, `7d`, `30m`, `2w` (before now) or an ISO date/time (UTC unless it says)."""
    match = RELATIVE.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SourceError(
            f"--since: expected e.g. 24h, 7d or an ISO date/time (got {text!r})"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
