"""What a replay shows: a progress bar while it runs, one paragraph when it ends.

The bar reads the run's counters: answers so far, their rate, the time left at that rate, the
errors and the spend. It draws only on a terminal; the summary is always printed.
"""

from __future__ import annotations

import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from shadowtap.replay.source import REASONS


@dataclass(slots=True)
class ReplayCounts:
    """What a run did; every request of the plan ends in exactly one of the buckets."""

    planned: int = 0
    answered: int = 0  # a stored answer: ok or an error the candidate returned
    errors: int = 0  # of the answered, how many were errors (status, timeout, reset)
    attempts: int = 0  # requests sent, retries included
    retries: int = 0  # re-sent after 429/503
    rate_limited: int = 0  # ended on 429/503: not stored, a rerun sends them again
    not_sent: int = 0  # never sent: the run stopped first
    cancelled: int = 0  # in flight when a second Ctrl-C cut the run: sent, answer lost
    unscored: int = 0  # pairs stored without a score: skipped by the scorer runner
    rescored: int = 0  # answers an earlier run stored but did not score, scored by this one
    cost_usd: float = 0.0
    tokens: int = 0
    without_usage: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


class ReplayProgress:
    """A rich progress bar over the plan; a no-op when `enabled` is False."""

    def __init__(self, console: Console, total: int, candidate: str, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._started = time.monotonic()
        if enabled and total:
            self._progress = Progress(
                TextColumn(f"replay to [bold]{candidate}[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} req/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[errors]} errors  ${task.fields[spend]:.4f}"),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(
                "replay", total=total, rate=0.0, errors=0, spend=0.0
            )

    def __enter__(self) -> ReplayProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, counts: ReplayCounts) -> None:
        if self._progress is None:
            return
        done = counts.answered + counts.rate_limited
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self._progress.update(
            self._task,
            completed=done,
            rate=done / elapsed,
            errors=counts.errors,
            spend=counts.cost_usd,
        )


@dataclass(slots=True)
class ReplaySummary:
    run_id: str
    candidate: str
    source: str
    db_path: Path
    config_path: Path | None
    counts: ReplayCounts
    stop_reason: str | None
    seconds: float
    recorded: int
    lost: int
    scores_lost: int = 0  # answers stored whose scores the database refused
    paced_rps: float | None = None  # the pacer's schedule over the run (with --rps)
    priced: bool = True  # the candidate has prices configured, so spend is known

    @property
    def complete(self) -> bool:
        """Everything planned was answered and stored (nothing left for a rerun)."""
        c = self.counts
        return self.stop_reason is None and not (c.rate_limited or c.not_sent or c.cancelled)

    def report_command(self) -> str:
        words = ["shadowtap", "report", "--db", str(self.db_path)]
        if self.config_path is not None:
            words += ["--config", str(self.config_path)]
        return shlex.join([*words, "--candidate", self.candidate])

    def paragraph(self) -> str:
        c = self.counts
        rate = c.attempts / self.seconds if self.seconds > 0 else 0.0
        parts = [
            f"Replayed {c.answered:,} of {c.planned:,} planned requests from {self.source} to "
            f"{self.candidate} in {self.seconds:.1f} s ({rate:.1f} requests/s, run "
            f"{self.run_id}): {c.answered - c.errors:,} answered ok, {c.errors:,} errors, "
            f"{c.retries:,} retries after 429/503."
        ]
        if self.paced_rps is not None and c.attempts > 1:
            parts.append(f"Paced at {self.paced_rps:.2f} requests/s.")
        spend = (
            f"Spend ${c.cost_usd:.4f}, {c.tokens:,} tokens"
            if self.priced
            else f"{c.tokens:,} tokens (no prices configured for {self.candidate}: spend unknown)"
        )
        if c.without_usage:
            spend += f" ({c.without_usage:,} answers reported no usage: a lower bound)"
        parts.append(spend + ".")
        if self.stop_reason:
            parts.append(f"Stopped early: {self.stop_reason}.")
        left = []
        if c.not_sent:
            left.append(f"{c.not_sent:,} not sent")
        if c.rate_limited:
            left.append(f"{c.rate_limited:,} refused with 429/503")
        if left:
            parts.append(f"{' and '.join(left)}: the same command sends them later.")
        if c.cancelled:
            parts.append(
                f"{c.cancelled:,} were cut off in flight: sent once, never re-sent by default "
                "(--retry-interrupted)."
            )
        if self.lost:
            parts.append(f"{self.lost:,} answers could not be stored (see the log).")
        if self.scores_lost:
            parts.append(
                f"The scores of {self.scores_lost:,} stored answers could not be stored (see "
                "the log): the same command scores them."
            )
        if c.rescored:
            parts.append(f"Scored {c.rescored:,} answers an earlier run stored but did not score.")
        if c.unscored:
            parts.append(
                f"{c.unscored:,} pairs were stored without a score (skipped: their `detail`"
                " in `scores` says why)."
            )
        if c.skipped:
            skipped = "; ".join(
                f"{count:,} {REASONS.get(reason, reason)}"
                for reason, count in sorted(c.skipped.items())
            )
            parts.append(f"Not replayed: {skipped}.")
        return " ".join(parts)

    def show(self, console: Console) -> None:
        console.print(self.paragraph(), soft_wrap=False, highlight=False)
        console.print(f"next: {self.report_command()}", soft_wrap=True, highlight=False)
