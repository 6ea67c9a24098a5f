#!/usr/bin/env python3
"""Regenerate the parts of the CloudFormation templates that are derived from the code.

    .venv/bin/python infra/render_templates.py           # rewrite the generated blocks in place
    .venv/bin/python infra/render_templates.py --check   # exit 1 and name the stale files (tests, CI)

Two kinds of blocks, each between `# BEGIN GENERATED <what>` and `# END GENERATED <what>` lines:

- infra/feature-store.yaml: `RecordIdentifierFeatureName`, `EventTimeFeatureName` and
  `FeatureDefinitions` of every feature group, from `features.spec.FEATURE_GROUPS` (one block per
  group, named by the group). Run this after changing the specification's feature groups.
- infra/streaming.yaml: the CloudWatch dashboard's body. Its custom metrics are the names the Lambda
  handlers actually emit: each handler runs once on an empty batch (no AWS call) and the metric names
  of its embedded-metric-format line are read back, so a metric added to a handler appears here, and a
  renamed one disappears, on the next run. The alarms widget lists every alarm of the streaming stack
  and, by name, those of the pipeline stack. Run this after adding, renaming or removing a metric.

Everything else in the templates is hand-written; the generated blocks must not be edited by hand
(tests/test_infra.py fails when a block differs from what this script writes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FEATURE_STORE_TEMPLATE = REPO / "infra" / "feature-store.yaml"
STREAMING_TEMPLATE = REPO / "infra" / "streaming.yaml"
PIPELINE_TEMPLATE = REPO / "infra" / "pipeline.yaml"

_BLOCK = re.compile(
    r"^(?P<indent>[ ]*)# BEGIN GENERATED (?P<what>[^\n]+?)\n.*?^(?P=indent)# END GENERATED (?P=what)\n",
    re.MULTILINE | re.DOTALL,
)


class RenderError(RuntimeError):
    """A template lacks a generated block the code needs (one line on the CLI)."""


# --------------------------------------------------------------------------- feature groups
def feature_group_block(name: str) -> list[str]:
    """YAML lines (no indent) of one feature group's identifier, event time and definitions."""
    from features import spec

    group = spec.FEATURE_GROUPS[name]
    lines = [
        f"RecordIdentifierFeatureName: {group.record_identifier}",
        f"EventTimeFeatureName: {group.event_time}",
        "FeatureDefinitions:",
    ]
    for definition in group.feature_definitions():
        lines += [
            f"  - FeatureName: {definition['FeatureName']}",
            f"    FeatureType: {definition['FeatureType']}",
        ]
    return lines


# --------------------------------------------------------------------------- emitted metrics
def _captured_emf(run: Callable[[], Any]) -> list[dict[str, Any]]:
    """The embedded-metric-format documents `run` prints."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run()
    docs = []
    for line in buffer.getvalue().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and "_aws" in doc:
                docs.append(doc)
    return docs


def _metric_names(docs: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Function dimension value -> [(metric name, unit)] in emission order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            function = str(doc.get("Function", ""))
            for metric in directive["Metrics"]:
                entry = (metric["Name"], metric.get("Unit", "None"))
                if entry not in out.setdefault(function, []):
                    out[function].append(entry)
    return out


def emitted_metrics() -> dict[str, list[tuple[str, str]]]:
    """What the three Lambdas emit, by `Function` dimension: run each on an input that calls no AWS API."""
    from lambdas.deploy_model import handler as deploy
    from lambdas.ingest_aggregates import handler as ingest
    from lambdas.score_transaction import handler as score

    empty = {"Records": []}
    docs = _captured_emf(
        lambda: score.process_batch(
            empty,
            featurestore=None,
            runtime=None,
            kinesis=None,
            sqs=None,
            config=score.Config(failure_queue_url="unused"),
        )
    )
    docs += _captured_emf(
        lambda: ingest.process_batch(
            empty, featurestore=None, sqs=None, config=ingest.Config(failure_queue_url="unused")
        )
    )
    config = deploy.DeployConfig(endpoint_name="e", model_package_group_name="g", execution_role_arn="r")
    result = {"status": "skipped", "reason": "", "model_package_arn": "", "model_package_version": ""}
    docs += _captured_emf(lambda: deploy._emit_metrics(result, config, "render"))
    return _metric_names(docs)


# --------------------------------------------------------------------------- dashboard
NS = "${MetricsNamespace}"
REGION = "${AWS::Region}"
FUNCTION_REFS = {"score_transaction": "ScoreFunction", "ingest_aggregates": "IngestFunction"}
"""`Function` dimension value the handler emits -> function resource of the streaming stack."""
PIPELINE_FUNCTION = "${NamePrefix}-deploy-model"
"""deploy_model lives in the pipeline stack (infra/pipeline.yaml names it NamePrefix-deploy-model)."""


def _alarm_names_of(template: Path) -> list[tuple[str, str]]:
    """(resource id, AlarmName Sub string) of every alarm in a template."""
    from cfnlint.decode import decode

    data, errors = decode(str(template))
    if errors:
        raise RenderError(f"{template.name} does not parse: {errors[0]}")
    out = []
    for rid, res in data["Resources"].items():
        if res["Type"] == "AWS::CloudWatch::Alarm":
            name = res["Properties"]["AlarmName"]
            out.append((rid, name["Fn::Sub"] if isinstance(name, dict) else str(name)))
    return out


def _widget(
    title: str, metrics: list[list[Any]], *, stat: str = "Sum", period: int = 60, **extra: Any
) -> dict:
    props = {"title": title, "region": REGION, "view": "timeSeries", "stat": stat, "period": period}
    return {"type": "metric", "properties": {**props, **extra, "metrics": metrics}}


def dashboard_body() -> dict[str, Any]:
    """The dashboard as data; `${...}` are CloudFormation Sub references resolved at deploy time."""
    from lambdas.deploy_model.handler import VARIANT_NAME

    emitted = emitted_metrics()
    score = dict(emitted.get("score_transaction", []))
    missing = {"Decisions", "FraudFlagged"} - set(score)
    if missing:
        raise RenderError(f"score_transaction no longer emits {sorted(missing)}: the dashboard needs them")
    widgets: list[dict[str, Any]] = []

    def fn_metric(function: str, name: str, **options: Any) -> list[Any]:
        return [NS, name, "Function", function, *([options] if options else [])]

    # Decisions, fraud rate (flagged / decisions over each period, not an average of batch rates).
    widgets.append(
        _widget(
            "Decisions and fraud flagged (score_transaction)",
            [fn_metric("score_transaction", "Decisions"), fn_metric("score_transaction", "FraudFlagged")],
        )
    )
    rate = [
        [
            {
                "expression": "IF(decisions > 0, flagged / decisions, 0)",
                "label": "fraud rate (flagged / decisions)",
                "id": "rate",
            }
        ],
        fn_metric("score_transaction", "Decisions", id="decisions", visible=False),
        fn_metric("score_transaction", "FraudFlagged", id="flagged", visible=False),
    ]
    if "FraudRate" in score:
        rate.append(
            fn_metric("score_transaction", "FraudRate", stat="Average", label="mean of batch fraud rates")
        )
    widgets.append(_widget("Fraud rate", rate))
    # Every other metric each consumer emits: counts summed, latencies as p50 / p99.
    for function in ("score_transaction", "ingest_aggregates"):
        shown = {"Decisions", "FraudFlagged", "FraudRate"} if function == "score_transaction" else set()
        counts = [
            fn_metric(function, n)
            for n, unit in emitted.get(function, [])
            if unit == "Count" and n not in shown
        ]
        if counts:
            widgets.append(_widget(f"{function}: late, malformed, failed, written records", counts))
        latency = [
            fn_metric(function, n, stat=stat, label=f"{n} {stat}")
            for n, unit in emitted.get(function, [])
            if unit == "Milliseconds"
            for stat in ("p50", "p99")
        ]
        if latency:
            widgets.append(_widget(f"{function}: latency per batch (ms)", latency, stat="p50"))
    # Metrics with another unit that no widget above shows (never silently dropped).
    for function in ("score_transaction", "ingest_aggregates"):
        other = [
            fn_metric(function, n, stat="Average")
            for n, unit in emitted.get(function, [])
            if unit not in ("Count", "Milliseconds")
            and not (function == "score_transaction" and n == "FraudRate")
        ]
        if other:
            widgets.append(_widget(f"{function}: other metrics", other, stat="Average"))
    for name, _unit in emitted.get("deploy_model", []):
        widgets.append(
            _widget(
                f"Endpoint deployments by status ({name}, deploy_model)",
                [
                    [
                        {
                            "expression": f'SEARCH(\'{{{NS},Function,Status}} Function="deploy_model" '
                            f"MetricName=\"{name}\"', 'Sum', 300)",
                            "label": "",
                            "id": f"d{len(widgets)}",
                        }
                    ]
                ],
                period=300,
            )
        )
    # Flink: records in/out, checkpoints, downtime (AWS/KinesisAnalytics, dimension Application).
    app = "${FlinkApplication}"
    widgets.append(
        _widget(
            "Flink records in / out per second",
            [
                ["AWS/KinesisAnalytics", "numRecordsInPerSecond", "Application", app],
                ["AWS/KinesisAnalytics", "numRecordsOutPerSecond", "Application", app],
            ],
            stat="Average",
        )
    )
    widgets.append(
        _widget(
            "Flink checkpoints and downtime",
            [
                [
                    "AWS/KinesisAnalytics",
                    "lastCheckpointDuration",
                    "Application",
                    app,
                    {"label": "lastCheckpointDuration (ms)"},
                ],
                ["AWS/KinesisAnalytics", "numberOfFailedCheckpoints", "Application", app, {"yAxis": "right"}],
                ["AWS/KinesisAnalytics", "downtime", "Application", app, {"yAxis": "right"}],
            ],
            stat="Maximum",
        )
    )
    # Lambdas: errors, throttles, iterator age.
    functions = [f"${{{ref}}}" for ref in FUNCTION_REFS.values()]
    widgets.append(
        _widget(
            "Lambda errors and throttles",
            [
                ["AWS/Lambda", metric, "FunctionName", fn]
                for fn in (*functions, PIPELINE_FUNCTION)
                for metric in ("Errors", "Throttles")
            ],
        )
    )
    widgets.append(
        _widget(
            "Lambda iterator age (ms)",
            [["AWS/Lambda", "IteratorAge", "FunctionName", fn] for fn in functions],
            stat="Maximum",
        )
    )
    # Streams: traffic and the Flink source's lag.
    widgets.append(
        _widget(
            "Kinesis incoming records",
            [
                ["AWS/Kinesis", "IncomingRecords", "StreamName", f"${{{s}}}"]
                for s in ("TransactionsStream", "CardFeaturesStream", "DecisionsStream")
            ]
            + [["AWS/Kinesis", "WriteProvisionedThroughputExceeded", "StreamName", "${TransactionsStream}"]],
        )
    )
    widgets.append(
        _widget(
            "Flink source lag: transactions iterator age (ms)",
            [["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", "${TransactionsStream}"]],
            stat="Maximum",
        )
    )
    # Dead-letter queues of both stacks.
    queues = ["${IngestDeadLetterQueue.QueueName}", "${ScoreDeadLetterQueue.QueueName}"]
    queues += ["${NamePrefix}-deploy-model-dlq", "${NamePrefix}-pipeline-schedule-dlq"]
    widgets.append(
        _widget(
            "Dead-letter queue depth",
            [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q] for q in queues],
            stat="Maximum",
            period=300,
        )
    )
    # Endpoint.
    endpoint = ["EndpointName", "${EndpointName}", "VariantName", VARIANT_NAME]
    widgets.append(
        _widget(
            "Endpoint invocations and errors",
            [
                ["AWS/SageMaker", "Invocations", *endpoint],
                ["AWS/SageMaker", "Invocation4XXErrors", *endpoint],
                ["AWS/SageMaker", "Invocation5XXErrors", *endpoint],
            ],
        )
    )
    widgets.append(
        _widget(
            "Endpoint model latency (microseconds)",
            [
                ["AWS/SageMaker", "ModelLatency", *endpoint, {"stat": "p50", "label": "ModelLatency p50"}],
                ["AWS/SageMaker", "ModelLatency", *endpoint, {"stat": "p99", "label": "ModelLatency p99"}],
            ],
            stat="p50",
        )
    )
    # Alarms of both stacks.
    alarms = [f"${{{rid}.Arn}}" for rid, _ in _alarm_names_of(STREAMING_TEMPLATE)]
    alarms += [
        f"arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{name}"
        for _, name in _alarm_names_of(PIPELINE_TEMPLATE)
    ]
    laid_out: list[dict[str, Any]] = [
        {
            "type": "alarm",
            "x": 0,
            "y": 0,
            "width": 24,
            "height": 4,
            "properties": {"title": "Alarms", "alarms": alarms},
        }
    ]
    for i, widget in enumerate(widgets):
        laid_out.append({**widget, "x": 12 * (i % 2), "y": 4 + 6 * (i // 2), "width": 12, "height": 6})
    return {"widgets": laid_out}


def dashboard_block() -> list[str]:
    """YAML lines (no indent) of the DashboardBody property: one widget per line."""
    body = dashboard_body()
    rows = [json.dumps(w, separators=(", ", ": ")) for w in body["widgets"]]
    lines = ["DashboardBody: !Sub |", '  {"widgets": [']
    lines += [f"    {row}{',' if i < len(rows) - 1 else ''}" for i, row in enumerate(rows)]
    lines.append("  ]}")
    return lines


# --------------------------------------------------------------------------- rewriting
def _blocks() -> dict[Path, dict[str, Callable[[], list[str]]]]:
    from features import spec

    return {
        FEATURE_STORE_TEMPLATE: {
            f"feature group {name} (features.spec)": (lambda name=name: feature_group_block(name))
            for name in spec.FEATURE_GROUPS
        },
        STREAMING_TEMPLATE: {"dashboard (metrics the Lambdas emit)": dashboard_block},
    }


def rendered(path: Path, text: str, blocks: dict[str, Callable[[], list[str]]]) -> str:
    """`text` with every generated block of `path` rewritten; RenderError when one is missing."""
    found: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        what, indent = match.group("what"), match.group("indent")
        if what not in blocks:
            raise RenderError(f"{path.name}: unknown generated block {what!r} (not produced by this script)")
        found.add(what)
        body = [f"{indent}{line}" if line else "" for line in blocks[what]()]
        return (
            "\n".join([f"{indent}# BEGIN GENERATED {what}", *body, f"{indent}# END GENERATED {what}"]) + "\n"
        )

    out = _BLOCK.sub(replace, text)
    missing = sorted(set(blocks) - found)
    if missing:
        raise RenderError(
            f"{path.name} has no '# BEGIN GENERATED {missing[0]}' ... '# END GENERATED {missing[0]}' block: "
            "add the two marker lines where it belongs"
        )
    return out


def render(check: bool = False) -> list[Path]:
    """Rewrite (or, with check, only compare) every template; return the files that were/are stale."""
    stale = []
    for path, blocks in _blocks().items():
        text = path.read_text()
        new = rendered(path, text, blocks)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    try:
        stale = render(check=args.check)
    except RenderError as exc:
        print(f"render_templates.py: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(str(p.relative_to(REPO)) for p in stale)
    if args.check:
        if stale:
            print(
                f"stale generated blocks in {names}: run .venv/bin/python infra/render_templates.py",
                file=sys.stderr,
            )
            return 1
        print("generated blocks are up to date", file=sys.stderr)
        return 0
    print(f"rewrote {names}" if stale else "templates already up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
