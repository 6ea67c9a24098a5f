#!/usr/bin/env bash
# Deploy the three CloudFormation stacks in order (`make deploy`, after `make package`).
#
#   ARTIFACT_BUCKET=my-bucket AWS_REGION=eu-west-1 bash infra/deploy.sh
#
# Environment:
#   ARTIFACT_BUCKET   (required) existing S3 bucket for code zips, pipeline data and models
#   AWS_REGION        region (else AWS_DEFAULT_REGION, else `aws configure get region`)
#   STACK_PREFIX      stack names <prefix>-feature-store / -pipeline / -streaming, and the NamePrefix
#                     of functions, queues, alarms (default: fraud-detection)
#   ARTIFACT_PREFIX   S3 key prefix of the uploaded zips (default: artifacts)
#   DIST_DIR          where infra/package.py wrote the zips (default: dist)
#   ALARM_TOPIC_ARN   optional SNS topic for every alarm
#   FEATURE_STORE_PARAMS / PIPELINE_PARAMS / STREAMING_PARAMS
#                     extra "Key=Value Key=Value" overrides per stack (e.g. STREAMING_PARAMS="ShardCount=2")
#   START_FLINK       1 (default) starts the Flink application when it is not running; 0 leaves it
#
# Order: feature-store (KMS key, feature groups) -> pipeline (execution role, model registry, deploy_model,
# schedule, approval rule) -> streaming (streams, Flink, scoring Lambdas). Each stack gets the previous
# stacks' outputs as parameters. Zips are uploaded under a content hash, so only changed code is redeployed.
set -euo pipefail

die() { echo "deploy.sh: $*" >&2; exit 1; }

cd "$(dirname "$0")/.."

command -v aws >/dev/null 2>&1 || die "the AWS CLI (v2) is required: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
[ -n "${ARTIFACT_BUCKET:-}" ] || die "set ARTIFACT_BUCKET to an existing S3 bucket (code zips, pipeline data, models)"
REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}"
[ -n "$REGION" ] || die "no region: set AWS_REGION (or AWS_DEFAULT_REGION, or 'aws configure set region ...')"
STACK_PREFIX="${STACK_PREFIX:-fraud-detection}"
ARTIFACT_PREFIX="${ARTIFACT_PREFIX:-artifacts}"
DIST_DIR="${DIST_DIR:-dist}"
START_FLINK="${START_FLINK:-1}"
ALARM_TOPIC_ARN="${ALARM_TOPIC_ARN:-}"

account="$(aws sts get-caller-identity --query Account --output text --region "$REGION" 2>/dev/null)" \
  || die "no usable AWS credentials (aws sts get-caller-identity failed): configure a profile or export AWS_PROFILE / keys"
echo "deploying to account $account, region $REGION, stacks $STACK_PREFIX-*" >&2

for zip in ingest_aggregates score_transaction deploy_model flink-app; do
  [ -f "$DIST_DIR/$zip.zip" ] || die "$DIST_DIR/$zip.zip is missing: run 'make package' first (see infra/package.py --help)"
done
aws s3api head-bucket --bucket "$ARTIFACT_BUCKET" --region "$REGION" >/dev/null 2>&1 \
  || die "bucket s3://$ARTIFACT_BUCKET does not exist or is not accessible from this account"

sha256() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -c1-16; else shasum -a 256 "$1" | cut -c1-16; fi; }

# upload NAME -> prints the S3 key (content-addressed: an unchanged zip is neither re-uploaded nor redeployed)
upload() {
  local file="$DIST_DIR/$1.zip" key
  key="$ARTIFACT_PREFIX/$1-$(sha256 "$file").zip"
  if ! aws s3api head-object --bucket "$ARTIFACT_BUCKET" --key "$key" --region "$REGION" >/dev/null 2>&1; then
    echo "uploading $file -> s3://$ARTIFACT_BUCKET/$key" >&2
    aws s3 cp "$file" "s3://$ARTIFACT_BUCKET/$key" --region "$REGION" --only-show-errors >&2
  fi
  echo "$key"
}

# output STACK KEY -> prints one output value of a deployed stack
output() {
  local value
  value="$(aws cloudformation describe-stacks --stack-name "$1" --region "$REGION" \
    --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text)"
  [ -n "$value" ] && [ "$value" != "None" ] || die "stack $1 has no output $2"
  echo "$value"
}

# deploy STACK TEMPLATE PARAM=VALUE...
deploy() {
  local stack="$1" template="$2"
  shift 2
  echo "deploying stack $stack ($template)" >&2
  aws cloudformation deploy \
    --stack-name "$stack" \
    --template-file "$template" \
    --region "$REGION" \
    --capabilities CAPABILITY_IAM \
    --no-fail-on-empty-changeset \
    --tags project=cc-fraud-streaming \
    --parameter-overrides "$@"
}

ingest_key="$(upload ingest_aggregates)"
score_key="$(upload score_transaction)"
deploy_key="$(upload deploy_model)"
flink_key="$(upload flink-app)"

# shellcheck disable=SC2086  # *_PARAMS are deliberately word-split into Key=Value pairs
deploy "$STACK_PREFIX-feature-store" infra/feature-store.yaml \
  "OfflineStoreBucket=${OFFLINE_STORE_BUCKET:-}" ${FEATURE_STORE_PARAMS:-}
fs_key="$(output "$STACK_PREFIX-feature-store" FeatureStoreKeyArn)"
streaming_fg="$(output "$STACK_PREFIX-feature-store" StreamingFeatureGroupName)"
batch_fg="$(output "$STACK_PREFIX-feature-store" BatchFeatureGroupName)"

# shellcheck disable=SC2086
deploy "$STACK_PREFIX-pipeline" infra/pipeline.yaml \
  "ArtifactBucket=$ARTIFACT_BUCKET" "DeployModelCodeKey=$deploy_key" "NamePrefix=$STACK_PREFIX" \
  "FeatureStoreKeyArn=$fs_key" "BatchFeatureGroupName=$batch_fg" "AlarmTopicArn=$ALARM_TOPIC_ARN" \
  ${PIPELINE_PARAMS:-}
role_arn="$(output "$STACK_PREFIX-pipeline" SageMakerExecutionRoleArn)"
endpoint="$(output "$STACK_PREFIX-pipeline" EndpointName)"
pipeline_name="$(output "$STACK_PREFIX-pipeline" PipelineName)"
deploy_fn="$(output "$STACK_PREFIX-pipeline" DeployModelFunctionArn)"

# shellcheck disable=SC2086
deploy "$STACK_PREFIX-streaming" infra/streaming.yaml \
  "ArtifactBucket=$ARTIFACT_BUCKET" "FlinkCodeKey=$flink_key" "IngestCodeKey=$ingest_key" \
  "ScoreCodeKey=$score_key" "NamePrefix=$STACK_PREFIX" "FeatureStoreKeyArn=$fs_key" \
  "StreamingFeatureGroupName=$streaming_fg" "BatchFeatureGroupName=$batch_fg" "EndpointName=$endpoint" \
  "AlarmTopicArn=$ALARM_TOPIC_ARN" ${STREAMING_PARAMS:-}
app="$(output "$STACK_PREFIX-streaming" FlinkApplicationName)"

if [ "$START_FLINK" = "1" ]; then
  status="$(aws kinesisanalyticsv2 describe-application --application-name "$app" --region "$REGION" \
    --query ApplicationDetail.ApplicationStatus --output text)"
  if [ "$status" = "READY" ]; then
    echo "starting Flink application $app (restores the latest snapshot when there is one)" >&2
    aws kinesisanalyticsv2 start-application --application-name "$app" --region "$REGION" >/dev/null
  else
    echo "Flink application $app is $status (not started by this script)" >&2
  fi
fi

cat >&2 <<EOF
done. Next:
  python run_pipeline.py upsert --region $REGION --role-arn $role_arn --bucket $ARTIFACT_BUCKET --deploy-lambda $deploy_fn   # pipeline $pipeline_name (the schedule starts it nightly)
     (same as: python run_pipeline.py upsert --region $REGION --stack $STACK_PREFIX-pipeline)
  python run_pipeline.py start --region $REGION --wait   # a first run now; approve its model package to deploy $endpoint
EOF
