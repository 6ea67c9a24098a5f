#!/usr/bin/env python3
"""Local endpoint latency and throughput, measured end to end over HTTP.

Trains a model on synthetic data with training/train.py (fixed size: no early stopping),
starts `python -m training.serve` as its own process (as the local runner does), then with
the `sagemaker-runtime`-shaped keep-alive client measures:
- single-row InvokeEndpoint latency (p50/p90/p99, >= 1000 sequential requests);
- 100-row requests: latency and rows/s (sequential, and with 2 concurrent clients);
- baseline in the same run: `Booster.inplace_predict` in-process for 1 and 100 rows, so the
  HTTP + parsing overhead is visible as a ratio.

    python benchmarks/bench_endpoint.py [--requests 2000] [--batch-requests 500] [--rows 100]
Writes benchmarks/results/endpoint.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from features import spec  # noqa: E402
from training.endpoint_client import LocalSageMakerRuntime, parse_scores, wait_until_ready  # noqa: E402
from training.model_artifact import load_booster  # noqa: E402
from training.train import train  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "endpoint.json"


def synthetic_channel(directory: Path, n: int, seed: int) -> np.ndarray:
    """Label-first CSV rows with the model input's width (amount, three ratios, then the streaming
    values); returns the features."""
    rng = np.random.default_rng(seed)
    extra = len(spec.MODEL_FEATURES) - 4
    x = np.column_stack(
        [
            rng.lognormal(3.5, 1.3, n),
            rng.lognormal(0, 0.5, n),
            rng.lognormal(0, 0.8, n),
            rng.exponential(0.2, n),
            *(rng.exponential(1.0, n) for _ in range(extra)),
        ]
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-(-7 + 3 * x[:, 3] + 0.4 * x[:, 2])))).astype(int)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "part-00000.csv").open("w") as fh:
        for label, row in zip(y, x, strict=True):
            fh.write(f"{label}," + ",".join(repr(float(v)) for v in row) + "\n")
    return x


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def to_csv(rows: np.ndarray) -> bytes:
    return ("\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n").encode()


def timed_requests(runtime: LocalSageMakerRuntime, bodies: list[bytes]) -> list[float]:
    out = []
    for body in bodies:
        t0 = time.perf_counter()
        resp = runtime.invoke_endpoint(EndpointName=spec.ENDPOINT_NAME, Body=body, ContentType="text/csv")
        resp["Body"].read()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="single-row requests (>= 1000)")
    parser.add_argument("--batch-requests", type=int, default=500)
    parser.add_argument("--rows", type=int, default=100, help="rows per batch request")
    parser.add_argument("--num-round", type=int, default=100, help="trees in the benchmark model")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.requests < 1000:
        parser.error("--requests must be >= 1000")

    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
        tmp_path = Path(tmp)
        print("training the benchmark model on synthetic data ...", flush=True)
        x = synthetic_channel(tmp_path / "train", 50_000, seed=1)
        result = train(
            tmp_path / "train",
            None,
            tmp_path / "model",
            {"num_round": args.num_round, "max_depth": 5, "early_stopping_rounds": 0},
            progress_every=args.num_round,
        )
        model_path = Path(result["model_path"])
        booster = load_booster(model_path, nthread=1)
        ready = tmp_path / "ready"
        log_path = tmp_path / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "training.serve", "--model", str(model_path), "--port", "0",
                 "--ready-file", str(ready), "--log-level", "WARNING"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"endpoint did not start: {log_path.read_text()}")
                time.sleep(0.05)
            url = ready.read_text().strip()
            wait_until_ready(url, timeout=30, process=server)
            runtime = LocalSageMakerRuntime({spec.ENDPOINT_NAME: url})

            rng = np.random.default_rng(2)
            single_rows = x[rng.integers(0, len(x), args.requests)]
            single_bodies = [to_csv(r[None, :]) for r in single_rows]
            batches = [x[rng.integers(0, len(x), args.rows)] for _ in range(args.batch_requests)]
            batch_bodies = [to_csv(b) for b in batches]

            # Correctness guard: the endpoint's scores are the booster's.
            resp = runtime.invoke_endpoint(EndpointName=spec.ENDPOINT_NAME, Body=batch_bodies[0])
            got = np.float32(parse_scores(resp["Body"].read()))
            if not np.array_equal(got, booster.inplace_predict(batches[0])):
                raise SystemExit("endpoint scores differ from the booster's")

            timed_requests(runtime, single_bodies[:200])  # warm-up
            print(f"{args.requests} single-row requests ...", flush=True)
            t0 = time.perf_counter()
            single = timed_requests(runtime, single_bodies)
            single_wall = time.perf_counter() - t0

            print(f"{args.batch_requests} requests of {args.rows} rows ...", flush=True)
            t0 = time.perf_counter()
            batch = timed_requests(runtime, batch_bodies)
            batch_wall = time.perf_counter() - t0

            # Two concurrent clients (one keep-alive connection each) on the same batches.
            def client(part: list[bytes]) -> None:
                timed_requests(runtime, part)

            threads = [threading.Thread(target=client, args=(batch_bodies[k::2],)) for k in range(2)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            concurrent_wall = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(timeout=15)

        # Baseline: the same predictions in-process, without HTTP.
        def inproc(rows_list: list[np.ndarray]) -> list[float]:
            out = []
            for rows in rows_list:
                t0 = time.perf_counter()
                booster.inplace_predict(rows)
                out.append(time.perf_counter() - t0)
            return out

        base_single = inproc([r[None, :] for r in single_rows])
        base_batch = inproc(batches)

    figures = {
        "single_row": {
            "requests": args.requests,
            **percentiles(single),
            "requests_per_s": round(args.requests / single_wall, 1),
        },
        "batch": {
            "rows_per_request": args.rows,
            "requests": args.batch_requests,
            **percentiles(batch),
            "rows_per_s": round(args.batch_requests * args.rows / batch_wall, 1),
        },
        "batch_2_clients": {
            "rows_per_s": round(args.batch_requests * args.rows / concurrent_wall, 1),
        },
        "baseline_inplace_predict": {
            "single_row_p50_ms": percentiles(base_single)["p50_ms"],
            "batch_p50_ms": percentiles(base_batch)["p50_ms"],
            "batch_rows_per_s": round(args.batch_requests * args.rows / sum(base_batch), 1),
        },
    }
    figures["http_overhead_ratio"] = {
        "single_row_p50": round(
            figures["single_row"]["p50_ms"] / figures["baseline_inplace_predict"]["single_row_p50_ms"], 1
        ),
        "batch_p50": round(
            figures["batch"]["p50_ms"] / figures["baseline_inplace_predict"]["batch_p50_ms"], 1
        ),
    }
    report = {
        "benchmark": "endpoint",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": {
            "python": platform.python_version(),
            "xgboost": __import__("xgboost").__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "model": {
            "trees": booster.num_boosted_rounds(),
            "max_depth": 5,
            "features": len(spec.MODEL_FEATURES),
        },
        "setup": "python -m training.serve in its own process; sequential keep-alive client (LocalSageMakerRuntime), text/csv",
        **figures,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    s, b = figures["single_row"], figures["batch"]
    print(
        f"single row : p50 {s['p50_ms']} ms, p90 {s['p90_ms']} ms, p99 {s['p99_ms']} ms, {s['requests_per_s']} req/s\n"
        f"{args.rows} rows   : p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, {b['rows_per_s']} rows/s "
        f"({figures['batch_2_clients']['rows_per_s']} rows/s with 2 clients)\n"
        f"in-process : 1 row p50 {figures['baseline_inplace_predict']['single_row_p50_ms']} ms, "
        f"{args.rows} rows p50 {figures['baseline_inplace_predict']['batch_p50_ms']} ms "
        f"(HTTP overhead x{figures['http_overhead_ratio']['single_row_p50']} / x{figures['http_overhead_ratio']['batch_p50']})\n"
        f"wrote {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
