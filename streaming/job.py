"""The PyFlink 1.20 streaming job: 10-minute per-card aggregates with late-event flagging.

Locally (bounded JSON-lines file in, JSON-lines directory out; terminates at end of input):
    .venv-flink/bin/python streaming/job.py --source-path IN.jsonl --sink-path OUT_DIR [--watermark-seconds N]
On Managed Service for Apache Flink (no arguments): Kinesis in/out, configured by the property
group `FraudFeatures` in /etc/flink/application_properties.json.
The SQL comes from streaming/sql.py (generated from features/spec.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # script mode: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streaming import sql

PROPERTIES_FILE = "/etc/flink/application_properties.json"
PROPERTY_GROUP = "FraudFeatures"
DEFAULT_WATERMARK_SECONDS = sql.DEFAULT_WATERMARK_SECONDS


def load_application_properties(path: str = PROPERTIES_FILE) -> dict[str, str] | None:
    """The `FraudFeatures` property group of Managed Flink, or None when not running there."""
    p = Path(os.environ.get("FLINK_APPLICATION_PROPERTIES", path))
    if not p.exists():
        return None
    for group in json.loads(p.read_text()):
        if group.get("PropertyGroupId") == PROPERTY_GROUP:
            return {str(k): str(v) for k, v in group.get("PropertyMap", {}).items()}
    return None


def config_from_properties(props: dict[str, str]) -> tuple[sql.ConnectorConfig, int]:
    """Kinesis connectors + watermark from the property group (names shared with infra).

    Streams are taken by ARN (`transactions.stream.arn`, `card-features.stream.arn`): the bundled
    `flink-sql-connector-kinesis` 5.x requires `stream.arn`; a bare stream name cannot be turned
    into one here (no account id), so its absence is a configuration error, not a fallback."""
    source, sink = props.get("transactions.stream.arn"), props.get("card-features.stream.arn")
    missing = [
        k for k, v in (("transactions.stream.arn", source), ("card-features.stream.arn", sink)) if not v
    ]
    if missing:
        raise ValueError(
            f"property group {PROPERTY_GROUP} lacks {', '.join(missing)} "
            "(flink-sql-connector-kinesis 5.x reads and writes streams by ARN)"
        )
    for key, arn in (("transactions.stream.arn", source), ("card-features.stream.arn", sink)):
        if not sql.is_stream_arn(arn):
            raise ValueError(f"{PROPERTY_GROUP}.{key} is not a Kinesis stream ARN: {arn!r}")
    conn = sql.ConnectorConfig(
        kind="kinesis",
        source=source,
        sink=sink,
        region=props.get("aws.region") or sql.arn_region(source),
        init_position=props.get("stream.initpos", "LATEST"),
    )
    return conn, int(float(props.get("watermark.seconds", DEFAULT_WATERMARK_SECONDS)))


IDLE_TIMEOUT = "30 s"
"""A Kinesis shard without traffic must not hold the watermark (and every window) back forever."""


def build_table_env(parallelism: int | None = None, idle_timeout: str | None = None):
    """Streaming-mode TableEnvironment in UTC (late routing needs watermarks: never batch mode)."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("table.local-time-zone", "UTC")
    if parallelism:
        conf.set("parallelism.default", str(parallelism))
    if idle_timeout:
        conf.set("table.exec.source.idle-timeout", idle_timeout)
    return t_env


def run(conn: sql.ConnectorConfig, watermark_seconds: int, parallelism: int | None = None, wait: bool = True):
    """Create the tables and submit the INSERT; wait for a bounded (local) run to finish."""
    t_env = build_table_env(parallelism, IDLE_TIMEOUT if conn.kind == "kinesis" else None)
    *ddl, insert = sql.statements(conn, watermark_seconds)
    for stmt in ddl:
        t_env.execute_sql(stmt)
    result = t_env.execute_sql(insert)
    if wait:
        result.wait()
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source-path", help="input events, JSON lines (file or directory); local mode")
    p.add_argument("--sink-path", help="output directory for enriched events (JSON lines); local mode")
    p.add_argument("--watermark-seconds", type=int, default=None, help="bounded out-of-orderness (s)")
    p.add_argument("--parallelism", type=int, default=1, help="local parallelism (1 keeps file order)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source_path or args.sink_path:
        if not (args.source_path and args.sink_path):
            print("error: --source-path and --sink-path go together", file=sys.stderr)
            return 2
        if not Path(args.source_path).exists():
            print(f"error: no such input: {args.source_path}", file=sys.stderr)
            return 2
        conn = sql.ConnectorConfig(
            kind="filesystem",
            source=str(Path(args.source_path).resolve()),
            sink=str(Path(args.sink_path).resolve()),
        )
        wm = DEFAULT_WATERMARK_SECONDS if args.watermark_seconds is None else args.watermark_seconds
        t0 = time.perf_counter()
        run(conn, wm, parallelism=args.parallelism)
        print(json.dumps({"status": "finished", "seconds": round(time.perf_counter() - t0, 3)}), flush=True)
        return 0
    props = load_application_properties()
    if props is None:
        print(
            f"error: no --source-path/--sink-path and no {PROPERTY_GROUP} group in {PROPERTIES_FILE}",
            file=sys.stderr,
        )
        return 2
    try:
        conn, wm = config_from_properties(props)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.watermark_seconds is not None:
        wm = args.watermark_seconds
    run(conn, wm, wait=False)  # Managed Flink keeps the unbounded job running
    return 0


if __name__ == "__main__":
    sys.exit(main())
