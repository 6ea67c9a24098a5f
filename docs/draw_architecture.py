#!/usr/bin/env python3
"""Draw docs/architecture.png (matplotlib only, so it runs from the main venv).

    .venv/bin/python docs/draw_architecture.py [--out docs/architecture.png]

The picture is code so it changes with the templates in review; the shaded areas are the three
CloudFormation stacks of infra/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

STACK_COLOURS = {
    "streaming.yaml": "#e8f1fb",
    "feature-store.yaml": "#eaf6ea",
    "pipeline.yaml": "#fdf1e3",
}
KIND_COLOURS = {
    "kinesis": "#7e57c2",
    "flink": "#e4572e",
    "lambda": "#f29e4c",
    "store": "#3c9d5d",
    "sagemaker": "#2a7ab0",
    "events": "#c2185b",
    "sqs": "#8d6e63",
    "ext": "#607d8b",
}


def box(
    ax, x: float, y: float, w: float, h: float, title: str, sub: str, kind: str
) -> tuple[float, float, float, float]:
    """A service box; returns its (x, y, w, h) for arrows."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc="white",
            ec=KIND_COLOURS[kind],
            lw=2,
        )
    )
    ax.text(
        x + w / 2, y + h * 0.66, title, ha="center", va="center", fontsize=9.5, weight="bold", color="#222"
    )
    ax.text(
        x + w / 2, y + h * 0.3, sub, ha="center", va="center", fontsize=7.3, color="#444", linespacing=1.15
    )
    return (x, y, w, h)


def arrow(
    ax, a, b, label: str = "", *, side: str = "h", style: str = "-|>", colour: str = "#333", rad: float = 0.0
):
    """Arrow from box a to box b (h: right edge -> left edge; v: bottom/top edges)."""
    ax_, ay, aw, ah = a
    bx, by, bw, bh = b
    if side == "h":
        start, end = (ax_ + aw, ay + ah / 2), (bx, by + bh / 2)
        if bx < ax_:
            start, end = (ax_, ay + ah / 2), (bx + bw, by + bh / 2)
    else:
        if by < ay:
            start, end = (ax_ + aw / 2, ay), (bx + bw / 2, by + bh)
        else:
            start, end = (ax_ + aw / 2, ay + ah), (bx + bw / 2, by)
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle=style, mutation_scale=12, color=colour, lw=1.3,
            connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2,
        )
    )  # fmt: skip
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + 0.12, label, ha="center", va="bottom", fontsize=7, color=colour, style="italic")


def link(
    ax, start, end, label: str, colour: str, *, rad: float = 0.0, label_dx: float = 0.0, t: float = 0.5
) -> None:
    """Arrow between explicit points (for paths the box-edge helper would draw through other boxes)."""
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=12, color=colour, lw=1.3,
            connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2,
        )
    )  # fmt: skip
    if label:
        mx = start[0] + (end[0] - start[0]) * t + label_dx
        my = start[1] + (end[1] - start[1]) * t
        ax.text(mx, my, label, ha="center", va="center", fontsize=7, color=colour, style="italic",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})  # fmt: skip


def stack_area(ax, x: float, y: float, w: float, h: float, name: str) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.15", fc=STACK_COLOURS[name], ec="#bbb"
        )
    )
    ax.text(
        x + 0.12,
        y + h - 0.12,
        f"infra/{name}",
        ha="left",
        va="top",
        fontsize=8,
        color="#666",
        family="monospace",
    )


def draw(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(16, 9.4), dpi=110)
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 9.4)
    ax.axis("off")
    ax.text(0.2, 9.15, "Real-time card-fraud detection on AWS", fontsize=15, weight="bold", va="top")
    ax.text(
        0.2, 8.72, "streaming path (top) scores every transaction in one batch call per Lambda batch;"
        " batch path (bottom) refreshes the 1-week snapshot and the model nightly", fontsize=9, color="#555", va="top",
    )  # fmt: skip

    # Stack areas (the endpoint sits outside: deploy_model creates it, no template does).
    stack_area(ax, 1.75, 4.55, 14.05, 3.95, "streaming.yaml")
    stack_area(ax, 9.2, 2.7, 4.1, 1.7, "feature-store.yaml")
    stack_area(ax, 0.15, 0.15, 15.65, 2.4, "pipeline.yaml")

    # Streaming path.
    prod = box(ax, 0.2, 6.5, 1.4, 0.9, "producers", "payment switch /\nsimulator", "ext")
    tx = box(ax, 2.0, 6.5, 1.7, 0.9, "transactions", "Kinesis, KMS", "kinesis")
    flink = box(ax, 4.1, 6.35, 2.6, 1.2, "Managed Flink 1.20", "PyFlink SQL: 10-min OVER window\nper card on trans_ts,\nlate events flagged, not dropped", "flink")  # fmt: skip
    cf = box(ax, 7.1, 6.5, 1.8, 0.9, "card-features", "Kinesis, KMS\n(enriched events)", "kinesis")
    score = box(ax, 9.4, 7.05, 2.3, 1.2, "score_transaction", "Lambda: 1 BatchGetRecord +\nshared ratio code +\n1 multi-row InvokeEndpoint", "lambda")  # fmt: skip
    ingest = box(
        ax, 9.4, 5.3, 1.9, 0.9, "ingest_aggregates", "Lambda: PutRecord\n(event time = trans_ts)", "lambda"
    )
    dec = box(ax, 12.3, 7.2, 1.8, 0.9, "fraud-decisions", "Kinesis, KMS", "kinesis")
    cons = box(ax, 14.5, 7.2, 1.2, 0.9, "consumers", "case mgmt,\nblocking", "ext")
    dlq = box(ax, 13.9, 5.3, 1.8, 0.9, "DLQs (SQS)", "rejects with reason,\nbatches given up", "sqs")
    box(ax, 13.5, 2.95, 2.25, 1.0, "SageMaker endpoint", "fraud-detection-endpoint\n(made by deploy_model)", "sagemaker")  # fmt: skip

    arrow(ax, prod, tx, "")
    arrow(ax, tx, flink)
    arrow(ax, flink, cf)
    arrow(ax, cf, score, "ESM", rad=-0.1)
    arrow(ax, cf, ingest, "ESM", rad=0.1)
    arrow(ax, score, dec, "PutRecords")
    arrow(ax, dec, cons)
    arrow(ax, ingest, dlq, "on failure / rejects", colour=KIND_COLOURS["sqs"])
    link(ax, (11.7, 7.3), (14.3, 6.2), "", KIND_COLOURS["sqs"], rad=-0.2)
    link(ax, (11.55, 7.05), (14.2, 3.95), "InvokeEndpoint (multi-row CSV)", KIND_COLOURS["sagemaker"], t=0.68)

    # Feature store.
    fg10 = box(ax, 9.4, 2.95, 1.9, 0.95, "cc-agg-fg", "10-min aggregates\nonline, KMS", "store")
    box(ax, 11.45, 2.95, 1.7, 0.95, "cc-agg-batch-fg", "1-week snapshot\nonline, KMS", "store")
    arrow(ax, ingest, fg10, "", side="v", colour=KIND_COLOURS["store"])
    link(ax, (12.3, 3.9), (11.2, 7.05), "BatchGetRecord", KIND_COLOURS["store"], t=0.22)

    # Batch path.
    sched = box(ax, 0.35, 0.5, 1.7, 1.1, "EventBridge\nScheduler", "nightly 02:00 UTC\nStartPipelineExecution", "events")  # fmt: skip
    spark = box(ax, 2.4, 0.5, 2.0, 1.1, "Spark processing", "aggregates, training CSV,\nsnapshot ingestion", "sagemaker")  # fmt: skip
    train = box(ax, 4.7, 0.5, 1.6, 1.1, "Training", "built-in XGBoost", "sagemaker")
    evalb = box(ax, 6.6, 0.5, 1.6, 1.1, "Evaluation", "evaluation.json\npr_auc >= MinPrAuc?", "sagemaker")
    reg = box(
        ax, 8.5, 0.5, 1.9, 1.1, "Model Registry", "fraud-detection-models\napproval status", "sagemaker"
    )
    rule = box(ax, 10.75, 0.5, 1.9, 1.1, "EventBridge rule", "package Approved", "events")
    deploy = box(ax, 13.0, 0.5, 2.3, 1.1, "deploy_model", "Lambda: model, endpoint config,\ncreate / blue-green update", "lambda")  # fmt: skip
    ax.text(2.4, 2.2, "SageMaker Pipeline (run_pipeline.py upsert)", fontsize=8, color="#666")  # fmt: skip

    arrow(ax, sched, spark)
    arrow(ax, spark, train)
    arrow(ax, train, evalb)
    arrow(ax, evalb, reg, "register")
    arrow(ax, reg, rule, "approve")
    arrow(ax, rule, deploy, "invoke")
    link(ax, (3.4, 1.6), (12.3, 2.95), "PutRecord, snapshot cut-off T", KIND_COLOURS["store"], t=0.6)
    link(
        ax,
        (14.15, 1.6),
        (14.6, 2.95),
        "Create/UpdateEndpoint",
        KIND_COLOURS["sagemaker"],
        rad=0.0,
        label_dx=-0.9,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("architecture.png")))
    args = parser.parse_args(argv)
    draw(Path(args.out))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
