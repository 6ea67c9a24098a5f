"""The names the local tools still import as `lambdas.common`; never shipped in a Lambda zip.

The stream Lambdas' plumbing lives in one module per concern:
- `lambdas.retries`: which AWS errors are retried in place, the backoff, `with_retries`;
- `lambdas.telemetry`: JSON log lines and EMF metrics;
- `lambdas.records`: Kinesis decoding and event validation (`MalformedRecord`);
- `lambdas.decisions`: decision ids and the consumer-side de-duplication;
- `lambdas.failures`: the SQS failure destination and the partial-batch response;
- `lambdas.settings`: environment values (`ConfigError`);
- `lambdas.testing`: the Kinesis test-event builder (tests, replay, benchmarks only).

Handlers import those modules directly; infra/package.py packs only what a handler imports, so
this module (which re-exports the test-event builder) stays out of the zips. New code should
import the concern modules; this one serves streaming/replay.py (whose owner can switch it over).
"""

from __future__ import annotations

from lambdas.decisions import DecisionDeduplicator
from lambdas.records import MalformedRecord, flink_reject_reason, parse_event
from lambdas.testing import kinesis_event

__all__ = ["DecisionDeduplicator", "MalformedRecord", "flink_reject_reason", "kinesis_event", "parse_event"]
