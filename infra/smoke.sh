#!/usr/bin/env bash
# End-to-end smoke test on a real account, after `make deploy` (`make smoke`).
#
#   AWS_REGION=eu-west-1 make smoke
#
# Steps (each prints "== smoke: <step>"; the first that fails ends the run with
# "smoke FAILED at step <step>" and a non-zero exit):
#   upsert     run_pipeline.py upsert --stack <prefix>-pipeline (role, bucket, deploy function from its outputs)
#   start      run_pipeline.py start --wait (the whole pipeline; needs transactions under InputDataUrl)
#   approve    run_pipeline.py approve --latest (the version the run registered)
#   endpoint   wait until the endpoint serves that version (deploy_model runs on the approval event)
#   flink      the Flink application is RUNNING
#   send       run_pipeline.py send --rows SMOKE_EVENTS (simulated, event time = now)
#   decisions  run_pipeline.py decisions --expect: every event sent decided exactly once
#
# Environment: AWS_REGION (or AWS_DEFAULT_REGION), STACK_PREFIX (default fraud-detection), PYTHON
# (default .venv/bin/python), SMOKE_DIR (default work/smoke), SMOKE_EVENTS (default 1000),
# SMOKE_ENDPOINT_TIMEOUT (seconds, default 3600), SMOKE_DECISIONS_TIMEOUT (seconds, default 900),
# SMOKE_POLL_SECONDS (default 30).
set -euo pipefail

cd "$(dirname "$0")/.."

REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
STACK_PREFIX="${STACK_PREFIX:-fraud-detection}"
PY="${PYTHON:-.venv/bin/python}"
SMOKE_DIR="${SMOKE_DIR:-work/smoke}"
SMOKE_EVENTS="${SMOKE_EVENTS:-1000}"
ENDPOINT_TIMEOUT="${SMOKE_ENDPOINT_TIMEOUT:-3600}"
DECISIONS_TIMEOUT="${SMOKE_DECISIONS_TIMEOUT:-900}"
POLL="${SMOKE_POLL_SECONDS:-30}"

step="setup"
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "smoke FAILED at step $step (exit $rc)" >&2
  fi
}
trap finish EXIT
begin() { step="$1"; echo "== smoke: $1" >&2; }
die() { echo "smoke: $*" >&2; exit 1; }

[ -n "$REGION" ] || die "set AWS_REGION (the region of the deployed stacks)"
command -v aws >/dev/null 2>&1 || die "the AWS CLI (v2) is required"
[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || die "$PY not found: run 'make install' or set PYTHON"
mkdir -p "$SMOKE_DIR"

output() {
  aws cloudformation describe-stacks --stack-name "$1" --region "$REGION" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text
}

begin upsert
"$PY" run_pipeline.py upsert --region "$REGION" --stack "$STACK_PREFIX-pipeline"

begin start
"$PY" run_pipeline.py start --region "$REGION" --wait --poll-seconds "$POLL"

begin approve
approved="$("$PY" run_pipeline.py approve --region "$REGION" --latest)"
echo "$approved" >&2
version="$(echo "$approved" | sed -n 's/.* version \([0-9][0-9]*\): Approved$/\1/p')"
[ -n "$version" ] || die "could not read the approved version from: $approved"

begin endpoint
endpoint="$(output "$STACK_PREFIX-pipeline" EndpointName)"
[ -n "$endpoint" ] && [ "$endpoint" != "None" ] || die "stack $STACK_PREFIX-pipeline has no output EndpointName"
waited=0
while :; do
  state="$(aws sagemaker describe-endpoint --endpoint-name "$endpoint" --region "$REGION" \
    --query '[EndpointStatus, EndpointConfigName]' --output text 2>/dev/null || echo "Missing -")"
  status="${state%%[[:space:]]*}"
  config="${state##*[[:space:]]}"
  echo "endpoint $endpoint: $status ($config)" >&2
  case "$status:$config" in
    InService:"$endpoint-v$version-"*) break ;;
    Failed:*) die "endpoint $endpoint is Failed" ;;
  esac
  [ "$waited" -lt "$ENDPOINT_TIMEOUT" ] || die "endpoint $endpoint does not serve version $version after ${ENDPOINT_TIMEOUT}s"
  sleep "$POLL"
  waited=$((waited + POLL))
done

begin flink
app="$(output "$STACK_PREFIX-streaming" FlinkApplicationName)"
app_status="$(aws kinesisanalyticsv2 describe-application --application-name "$app" --region "$REGION" \
  --query ApplicationDetail.ApplicationStatus --output text)"
[ "$app_status" = "RUNNING" ] || die "Flink application $app is $app_status, not RUNNING (infra/deploy.sh starts it)"

begin send
"$PY" run_pipeline.py send --region "$REGION" --rows "$SMOKE_EVENTS" --out "$SMOKE_DIR/sent.jsonl"

begin decisions
"$PY" run_pipeline.py decisions --region "$REGION" --since 1h --summary-only \
  --expect "$SMOKE_DIR/sent.jsonl" --timeout "$DECISIONS_TIMEOUT"

step="done"
echo "smoke OK: version $version serves on $endpoint; $SMOKE_EVENTS events sent, each decided once" >&2
