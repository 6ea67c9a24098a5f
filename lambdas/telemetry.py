"""What the Lambdas tell CloudWatch: JSON log lines and embedded-metric-format (EMF) metrics.

Lambda ships stdout to CloudWatch Logs; Logs Insights parses the JSON fields of `log` lines and
CloudWatch extracts the metrics of `put_metrics` documents (infra/render_templates.py builds the
dashboard from the metric names the handlers emit this way).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

DEFAULT_METRICS_NAMESPACE = "FraudDetection/Streaming"


def log(level: str, message: str, **fields: Any) -> None:
    """One JSON object per line on stdout (CloudWatch Logs Insights parses the fields)."""
    print(
        json.dumps({"level": level, "message": message, **fields}, default=str), file=sys.stdout, flush=True
    )


def emf(
    namespace: str,
    metrics: Mapping[str, tuple[float, str]],
    dimensions: Mapping[str, str],
    properties: Mapping[str, Any] | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """A CloudWatch embedded-metric-format document (metrics as name -> (value, unit))."""
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(timestamp_ms if timestamp_ms is not None else time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": n, "Unit": u} for n, (_, u) in metrics.items()],
                }
            ],
        },
        **dimensions,
        **{n: v for n, (v, _) in metrics.items()},
        **(properties or {}),
    }
    return doc


def put_metrics(
    namespace: str, metrics: Mapping[str, tuple[float, str]], **dimensions: str
) -> dict[str, Any]:
    """Print an EMF document (Lambda ships stdout to CloudWatch, which extracts the metrics)."""
    doc = emf(namespace, metrics, dimensions)
    print(json.dumps(doc), file=sys.stdout, flush=True)
    return doc
