"""The scorer protocol: how a scorer is configured, what it sees and what it may answer.

A scorer turns one pair of answers to the same request — the primary's and a shadow's (a
candidate or the secondary) — into agreement: a float in [0, 1] where 1 means "they agree".
It has exactly three ways to answer, never conflated:

* a number in [0, 1] (or a `Verdict` carrying that number and a small `detail` dict),
* `None` — not applicable to this pair (say, `json_match` when the primary is not JSON),
* an exception — counted in `shadowtap_scorer_errors_total`, stored in `scores.error`, and
  never propagated: the pair is still recorded.

The runner applies one rule before any scorer runs: **when either side of the pair errored**
(`Completion.ok` is False: no answer, an HTTP error status, an unreadable body) the score is
`None` with `detail={"reason": ...}`. A scorer never sees a failed answer, so it only has to
handle real ones (which can still be empty, invalid JSON, or tool calls without text).

A scorer is built once at start from its config table. The table's keys are validated by the
scorer's `Options` (a pydantic model with `extra="forbid"`, so a typo stops the start naming the
key); every scorer accepts `type`, `threshold` and `rate`. There are two kinds:

* `CpuScorer` — `score(pair)` is a plain function, run in a scoring worker process
  (`shadowtap.scorers.pool`), never in the proxy's process: a scorer stuck in a regex or a
  loop cannot stall the event loop, and one that runs past its time limit (its `timeout_s`
  option, or `server.scoring_timeout_s`, 2 s by default) has its worker killed and replaced —
  the pair's score becomes an error ("timed out after 2 s"), counted like any other. So a CPU
  scorer must pickle (the workers get a copy, built once at start; keep heavy clients out of
  `__init__` or make them lazy) and must be importable by its module path (not defined in
  `__main__` or inside a function). A pair whose texts are over `server.scoring_max_pair_chars`
  is skipped, not sent. Set `reads_request = False` when `score` never looks at
  `pair.request`: the request body is then neither sent nor counted against that bound.
* `IoScorer` — `async score(pair, session)` for scorers that call a model (judges, embedding
  endpoints) through the proxy's shared `aiohttp.ClientSession`; the runner bounds each call
  by the scorer's `timeout_s`.

A *per-response* scorer (`per_response = True`, e.g. `json_schema_valid`) judges each answer on
its own: it is also run with the primary as the target (stored as target "primary"), and it
should look at `pair.target` only.

A third-party scorer is a class registered in the entry-point group `shadowtap.scorers`:

    # my_scorers.py — in a package whose pyproject.toml has
    #   [project.entry-points."shadowtap.scorers"]
    #   same_first_word = "my_scorers:SameFirstWord"
    from shadowtap.scorers.base import CpuScorer, Pair, ScorerOptions

    class SameFirstWordOptions(ScorerOptions):
        case_sensitive: bool = False

    class SameFirstWord(CpuScorer[SameFirstWordOptions]):
        Options = SameFirstWordOptions

        def score(self, pair: Pair) -> float | None:
            a, b = (pair.primary.text or "").split()[:1], (pair.target.text or "").split()[:1]
            if not a and not b:
                return None
            if not self.options.case_sensitive:
                a, b = [w.casefold() for w in a], [w.casefold() for w in b]
            return 1.0 if a == b else 0.0

and in `shadowtap.toml`: `[scorers.first_word]` / `type = "same_first_word"` / `threshold = 1`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from shadowtap.completion import Completion

if TYPE_CHECKING:
    import aiohttp
    from shadowtap.exchange import Role

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ScorerOptions(BaseModel):
    """Options every scorer accepts; subclass it to add a scorer's own (unknown keys fail)."""

    # defer_build: the validators are built on the first validation (the config, in the proxy)
    # and never in a scoring worker, which only unpickles validated options: building them
    # there cost ~3 MB a worker (pydantic's plug-in loader, importlib.metadata, email, zipfile).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    type: str
    # A score under the threshold counts in shadowtap_disagreements_total.
    threshold: Fraction = 0.8
    # Share of sampled exchanges this scorer looks at (judges cost money; text distance does not).
    rate: Fraction = 1.0
    # A CPU scorer's hard time limit per pair (None: server.scoring_timeout_s); an I/O
    # scorer's timeout per call.
    timeout_s: Annotated[float, Field(gt=0)] | None = None


class IoScorerOptions(ScorerOptions):
    timeout_s: Annotated[float, Field(gt=0)] = 30.0


@dataclass(frozen=True, slots=True)
class Pair:
    """What a scorer sees. `request` is the client's request JSON (None when it was not JSON)."""

    request: dict[str, Any] | None
    primary: Completion
    target: Completion
    target_name: str  # "secondary", a candidate's name, or "primary" for per-response scorers
    role: Role


@dataclass(frozen=True, slots=True)
class Verdict:
    """A score with a small JSON-able `detail` (stored in `scores.detail`). Never put secrets
    or whole answers in it."""

    score: float | None
    detail: dict[str, Any] | None = None


Result = float | Verdict | None
OptionsT = TypeVar("OptionsT", bound=ScorerOptions)


class ScorerSkipped(Exception):
    """Raised by a scorer that chose not to score (e.g. its budget is spent). Stored as a None
    score with `detail={"skipped": reason}`, not counted as an error."""


class Scorer(ABC, Generic[OptionsT]):
    """Common part of both kinds; subclass `CpuScorer` or `IoScorer`, not this."""

    Options: ClassVar[type[ScorerOptions]] = ScorerOptions
    per_response: ClassVar[bool] = False

    def __init__(self, name: str, options: OptionsT) -> None:
        self.name = name
        self.options = options

    @property
    def threshold(self) -> float:
        return self.options.threshold

    @property
    def rate(self) -> float:
        return self.options.rate

    async def close(self) -> None:
        """Release anything the scorer holds; called once when the proxy stops."""

    def __repr__(self) -> str:
        # Deliberately not the options: they may hold an api_key.
        return f"<{type(self).__name__} {self.name!r} type={self.options.type!r}>"


class CpuScorer(Scorer[OptionsT]):
    # False: `pair.request` is always None for this scorer, and the request body is not sent
    # to the worker with its pairs.
    reads_request: ClassVar[bool] = True

    @abstractmethod
    def score(self, pair: Pair) -> Result:
        """Agreement of `pair.target` with `pair.primary`, in [0, 1]; None if not applicable."""


class IoScorer(Scorer[OptionsT]):
    Options: ClassVar[type[ScorerOptions]] = IoScorerOptions

    @abstractmethod
    async def score(self, pair: Pair, session: aiohttp.ClientSession) -> Result:
        """As `CpuScorer.score`, awaiting I/O through the proxy's shared session."""


# Float noise (0.1 + 0.2 style) may push a computed score a hair outside [0, 1]: clamp that,
# but a scorer returning 1.5 is a bug and is reported as an error.
SCORE_SLACK = 1e-9


def check_result(result: Result) -> tuple[float | None, dict[str, Any] | None]:
    """(score, detail) from what a scorer returned; a malformed result raises (a scorer error)."""
    detail = None
    raw: object = result
    if isinstance(result, Verdict):
        raw, detail = result.score, result.detail
    if raw is None:
        return None, detail
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise TypeError(f"score must be a float or None (got {type(raw).__name__})")
    value = float(raw)
    if not math.isfinite(value) or not -SCORE_SLACK <= value <= 1 + SCORE_SLACK:
        raise ValueError(f"score must be in [0, 1] (got {value!r})")
    return min(1.0, max(0.0, value)), detail


def answer_texts(pair: Pair) -> tuple[str, str] | None:
    """The two answers' texts, or None when neither has text but one has tool calls (a pure
    tool-call turn is the `tool_calls` scorer's business, not a text scorer's), and for an
    embeddings pair (vectors are `embedding_agreement`'s business: no text to compare)."""
    if pair.primary.embeddings is not None or pair.target.embeddings is not None:
        return None
    a, b = pair.primary.text or "", pair.target.text or ""
    if not a and not b and (pair.primary.tool_calls or pair.target.tool_calls):
        return None
    return a, b
