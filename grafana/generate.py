"""shadowtap's Grafana dashboards, written as code with grafana-foundation-sdk.

    make dashboards          # rewrites grafana/dashboards/*.json from this file

The JSON under `grafana/dashboards/` is generated and committed so Grafana can provision it
without Python; `tests/test_dashboards.py` fails when it is stale. Every query reads the metrics
defined in `proxy/metrics.py`; `$candidate` selects candidate targets (a regex alternation when
several are selected), and the primary and the secondary (the noise floor) are always shown
beside them.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DynamicConfigValue,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE_UID = "shadowtap-prometheus"  # grafana/provisioning/datasources/prometheus.yaml
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

RATE = "[$__rate_interval]"
CANDIDATES = 'target=~"$candidate"'
SHADOWS = 'target=~"secondary|$candidate"'
EVERY_TARGET = 'target=~"primary|secondary|$candidate"'
NOISE = 'target="secondary"'  # the primary's model asked again
PRIMARY_SAMPLED = 'target="primary", route!="other"'  # the routes shadows see too
SHED = f'{SHADOWS}, outcome="shed"'
FAILED = 'status_class=~"5xx|error"'  # "error": no HTTP answer at all (refused, reset, timeout)
QUANTILES = (0.5, 0.95, 0.99)


Target = tuple[str, str]  # (PromQL expression, legend format)


def rate(metric: str, selector: str, by: str) -> str:
    matchers = f"{{{selector}}}" if selector else ""
    return f"sum by ({by}) (rate({metric}{matchers}{RATE}))"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/\n{denominator}"


def quantile(q: float, metric: str, selector: str, by: str) -> str:
    return f"histogram_quantile({q}, {rate(metric, selector, by)})"


def or_zero(expr: str, zeros: str) -> str:
    """`expr`, and 0 for the label sets only `zeros` has: counters that never moved show 0."""
    return f"{expr}\nor\n{zeros} * 0"


def dataqueries(targets: Iterable[Target]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i)).range()
        for i, (expr, legend) in enumerate(targets)
    ]


def graph(
    title: str,
    description: str,
    unit: str,
    *targets: Target,
    width: int = 12,
    stacked: bool = False,
    dashed: str | None = None,
) -> timeseries.Panel:
    """A time series panel; `dashed` is a legend regex drawn dashed (the noise floor)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(dataqueries(targets))
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10 if not stacked else 40)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    if dashed is not None:
        dash = {"fill": "dash", "dash": [10, 10]}
        panel = panel.override_by_regexp(
            dashed,
            [
                DynamicConfigValue(id_val="custom.lineStyle", value=dash),
                DynamicConfigValue(id_val="custom.lineWidth", value=2),
            ],
        )
    return panel


def single(title: str, description: str, unit: str, target: Target) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(dataqueries([target]))
        .unit(unit)
        .span(6)
        .height(4)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def traffic_row() -> list[stat.Panel | timeseries.Panel]:
    primary = 'role="primary"'
    answers = f"sum(rate(shadowtap_requests_total{{{primary}}}{RATE}))"
    failed = f"sum(rate(shadowtap_requests_total{{{primary}, {FAILED}}}{RATE}))"
    sampled = f'sum(rate(shadowtap_sampling_decisions_total{{outcome="sampled"}}{RATE}))'
    decided = f"sum(rate(shadowtap_sampling_decisions_total{RATE}))"
    by_target = rate("shadowtap_requests_total", EVERY_TARGET, "target")
    failed_by_target = rate("shadowtap_requests_total", f"{EVERY_TARGET}, {FAILED}", "target")
    return [
        single(
            "Primary requests/s",
            "Every request proxied to the primary, sampled or not.",
            "reqps",
            (answers, "primary"),
        ),
        single(
            "Primary error rate",
            "Share of primary answers that were 5xx or never arrived.",
            "percentunit",
            (ratio(failed, answers), "primary"),
        ),
        single(
            "Sampled share",
            "Share of eligible requests mirrored to shadows (sampling.rate, budget and shedding).",
            "percentunit",
            (ratio(sampled, decided), "sampled"),
        ),
        single(
            "Instances",
            "shadowtap processes reporting, by version.",
            "short",
            ("count by (version) (shadowtap_build_info)", "{{version}}"),
        ),
        graph(
            "Requests/s by target",
            "Answers per second: the primary, the secondary and each selected candidate.",
            "reqps",
            (by_target, "{{target}}"),
        ),
        graph(
            "Error rate by target",
            "Share of answers that were 5xx or never arrived (connection error, timeout).",
            "percentunit",
            (ratio(failed_by_target, by_target), "{{target}}"),
        ),
    ]


def latency_row() -> list[timeseries.Panel]:
    def quantiles(metric: str) -> list[Target]:
        bucket = f"{metric}_bucket"
        return [
            (quantile(q, bucket, EVERY_TARGET, "target, le"), f"{{{{target}}}} p{round(q * 100)}")
            for q in QUANTILES
        ]

    return [
        graph(
            "Latency p50 / p95 / p99 by target",
            "From sending the request upstream to the end of the answer.",
            "s",
            *quantiles("shadowtap_request_duration_seconds"),
        ),
        graph(
            "Time to first token p50 / p95 / p99 by target",
            "Streamed requests only: from sending upstream to the first content token.",
            "s",
            *quantiles("shadowtap_time_to_first_token_seconds"),
        ),
    ]


def disagreement_ratio(selector: str) -> str:
    """Disagreements per scored pair; targets that never disagreed show 0 rather than a gap."""
    scored = rate("shadowtap_agreement_score_count", selector, "target, scorer")
    disagreed = rate("shadowtap_disagreements_total", selector, "target, scorer")
    return ratio(f"({or_zero(disagreed, scored)})", scored)


def mean_agreement(selector: str) -> str:
    return ratio(
        rate("shadowtap_agreement_score_sum", selector, "target, scorer"),
        rate("shadowtap_agreement_score_count", selector, "target, scorer"),
    )


def agreement_row() -> list[timeseries.Panel]:
    by_scorer = "{{target}} · {{scorer}}"
    scored = rate("shadowtap_agreement_score_count", "", "scorer")  # every scorer that scored
    return [
        graph(
            "Mean agreement with the primary, beside the noise floor",
            "Mean scorer agreement (1 = same answer) of each candidate with the primary. The "
            "dashed lines are the secondary (the primary's model asked again): a candidate is "
            "only worse when it sits below them.",
            "percentunit",
            (mean_agreement(CANDIDATES), by_scorer),
            (mean_agreement(NOISE), "noise floor · {{scorer}}"),
            dashed="noise floor.*",
        ),
        graph(
            "Disagreement rate, beside the noise floor",
            "Share of scored pairs under the scorer's threshold. Dashed: the secondary's rate, "
            "the disagreement that is only nondeterminism.",
            "percentunit",
            (disagreement_ratio(CANDIDATES), by_scorer),
            (disagreement_ratio(NOISE), "noise floor · {{scorer}}"),
            dashed="noise floor.*",
        ),
        graph(
            "Agreement p10 by candidate and scorer",
            "The worst tenth of pairs: 10% of pairs agree less than this.",
            "percentunit",
            (
                quantile(0.1, "shadowtap_agreement_score_bucket", SHADOWS, "target, scorer, le"),
                by_scorer,
            ),
        ),
        graph(
            "Scorer errors and skips/s",
            "Scorer calls that raised, and pairs a scorer skipped on purpose (a judge over its "
            "budget); either way the pair is still recorded, without that score.",
            "ops",
            (
                or_zero(rate("shadowtap_scorer_errors_total", "", "scorer"), scored),
                "{{scorer}} errors",
            ),
            (
                or_zero(rate("shadowtap_scorer_skipped_total", "", "scorer"), scored),
                "{{scorer}} skipped",
            ),
        ),
    ]


def shadow_row() -> list[timeseries.Panel]:
    shadows = rate("shadowtap_shadow_requests_total", SHADOWS, "target")
    shed = rate("shadowtap_shadow_requests_total", SHED, "target")
    return [
        graph(
            "Shadow outcomes/s",
            "Shadow requests by outcome: ok, error, timeout, and shed (over budget, never sent).",
            "ops",
            (
                rate("shadowtap_shadow_requests_total", SHADOWS, "target, outcome"),
                "{{target}} · {{outcome}}",
            ),
            stacked=True,
        ),
        graph(
            "Shed share by target",
            "Share of shadow requests shed to protect the primary path.",
            "percentunit",
            (ratio(shed, shadows), "{{target}}"),
        ),
        graph(
            "Shadows in flight",
            "Shadow requests currently waiting on their target (bounded by sampling.max_inflight).",
            "short",
            (f"sum by (target) (shadowtap_shadow_inflight{{{SHADOWS}}})", "{{target}}"),
        ),
        graph(
            "Sampling decisions/s",
            "Eligible requests by decision: sampled, not_sampled, shed, memory, too_large, "
            "invalid_json (counted among the requests the draw chose: the others are "
            "not_sampled, never parsed).",
            "ops",
            (rate("shadowtap_sampling_decisions_total", "", "outcome"), "{{outcome}}"),
            stacked=True,
        ),
    ]


def recorder_row() -> list[timeseries.Panel]:
    return [
        graph(
            "Recorder throughput",
            "Exchanges written to DuckDB, dropped because the queue was full, and failed batches.",
            "ops",
            (f"sum(rate(shadowtap_records_written_total{RATE}))", "written"),
            (f"sum(rate(shadowtap_records_dropped_total{RATE}))", "dropped"),
            (f"sum(rate(shadowtap_record_write_errors_total{RATE}))", "write errors"),
        ),
        graph(
            "Record queue depth",
            "Exchanges waiting for the storage writer; near storage.queue_max means drops soon.",
            "short",
            ("sum(shadowtap_record_queue_depth)", "queued"),
        ),
    ]


def cost_row() -> list[stat.Panel | timeseries.Panel]:
    return [
        graph(
            "Tokens/s by target",
            "Tokens reported in usage by sampled answers.",
            "short",
            (rate("shadowtap_tokens_total", EVERY_TARGET, "target, kind"), "{{target}} · {{kind}}"),
            width=9,
        ),
        graph(
            "Spend by target (USD/hour)",
            "Estimated from price_per_1k_prompt / price_per_1k_completion of each target.",
            "currencyUSD",
            (rate("shadowtap_cost_usd_total", EVERY_TARGET, "target") + " * 3600", "{{target}}"),
            width=9,
        ),
        single(
            "Spend in range (USD)",
            "Estimated spend of sampled answers over the dashboard's time range.",
            "currencyUSD",
            (
                f"sum by (target) (increase(shadowtap_cost_usd_total{{{EVERY_TARGET}}}[$__range]))",
                "{{target}}",
            ),
        ),
    ]


def gates_row() -> list[timeseries.Panel]:
    """The live counterparts of `shadowtap report`'s gates (max_p95_latency_ratio,
    max_agreement_drop); the report's verdict, with confidence intervals, is the one to act on."""
    bucket = "shadowtap_request_duration_seconds_bucket"
    primary_p95 = quantile(0.95, bucket, PRIMARY_SAMPLED, "le")
    candidate_p95 = quantile(0.95, bucket, CANDIDATES, "target, le")
    return [
        graph(
            "p95 latency relative to the primary",
            "Each candidate's p95 latency divided by the primary's on the sampled routes "
            "(gates.max_p95_latency_ratio; 1 = as fast).",
            "x",
            (f"{candidate_p95}\n/ on () group_left ()\n{primary_p95}", "{{target}}"),
        ),
        graph(
            "Agreement below the noise floor",
            "The secondary's mean agreement minus each candidate's, per scorer "
            "(gates.max_agreement_drop; 0 or less = as consistent as the primary itself).",
            "percentunit",
            (
                f"{mean_agreement(NOISE)}\n- on (scorer) group_right ()\n"
                f"{mean_agreement(CANDIDATES)}",
                "{{target}} · {{scorer}}",
            ),
        ),
    ]


def overview() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("shadowtap — overview")
        .uid("shadowtap-overview")
        .description("Traffic, latency, agreement beside the noise floor, shadows, storage, cost.")
        .tags(["shadowtap"])
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(VariableOption(text="Prometheus", value=DATASOURCE_UID, selected=True))
        )
        .with_variable(
            dashboard.QueryVariable("candidate")
            .label("Candidate")
            .datasource(DATASOURCE)
            .query('label_values(shadowtap_requests_total{role="candidate"}, target)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .current(VariableOption(text="All", value="$__all", selected=True))
        )
    )
    rows = {
        "Traffic": traffic_row(),
        "Latency": latency_row(),
        "Agreement": agreement_row(),
        "Shadows and shedding": shadow_row(),
        "Recorder": recorder_row(),
        "Tokens and cost": cost_row(),
        "Swap gates (live)": gates_row(),
    }
    ids = itertools.count(1)  # explicit, stable panel ids keep links to a panel working
    for title, panels in rows.items():
        board = board.with_row(dashboard.Row(title).id(next(ids)))
        for panel in panels:
            board = board.with_panel(panel.id(next(ids)))
    return board


def dashboards() -> dict[str, dict[str, object]]:
    """File name -> dashboard JSON, as written under grafana/dashboards/."""
    built = {"overview.json": overview()}
    return {name: json.loads(render(board)) for name, board in built.items()}


def render(board: dashboard.Dashboard | dict[str, object]) -> str:
    value = board.build() if isinstance(board, dashboard.Dashboard) else board
    return json.dumps(value, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    for name, board in dashboards().items():
        (DASHBOARDS_DIR / name).write_text(render(board), encoding="utf-8")
        print(f"wrote {DASHBOARDS_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
