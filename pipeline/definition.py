"""The SageMaker Pipeline, built with the SageMaker Python SDK 3.x in one function.

    aggregate (PySpark, Spark 3.5) -> train (built-in XGBoost) -> evaluate
        -> pr_auc >= MinPrAuc and recall > 0 (at the decision threshold) ?
        yes: register (model package group, metrics) -> deploy (Lambda deploy_model)
        no:  fail (message carries the measured pr_auc and recall)

The definition is generated offline: no credentials, no network. The SDK creates boto3
clients at import and step-construction time and validates roles through IAM unless told
otherwise, so the build runs inside `offline_aws()` (dummy credentials, no instance
metadata, role validation off) and every code artifact is referenced by an S3 URI derived
from a content hash of the local sources: the SDK never uploads anything, and `upsert`
uploads exactly the bundle the definition names (`build_code_bundle`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features import spec
from pipeline.parameters import DEFAULT_PREFIX, parameter_specs

REPO_ROOT = Path(__file__).resolve().parents[1]

SPARK_VERSION = "3.5"
SPARK_PY_VERSION = "py312"
XGBOOST_VERSION = "3.0-5"
"""Built-in XGBoost image; matches the pinned local xgboost (3.0.5) so one artifact serves both."""

DEPLOY_LAMBDA_NAME = f"{DEFAULT_PREFIX}-deploy-model"
"""Placeholder for the offline `definition` printout only: `upsert` takes the function from the pipeline
stack's output DeployModelFunctionArn (`--stack` or `--deploy-lambda`), since the name follows NamePrefix."""

PLACEHOLDER_ACCOUNT = "111122223333"
PLACEHOLDER_ROLE_ARN = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/{DEFAULT_PREFIX}-sagemaker-execution"

CODE_PACKAGES: tuple[str, ...] = ("features", "processing", "training")
"""Shipped to the jobs: the shared feature module and the step scripts (same code as local mode)."""
SPARK_PY_FILES_PACKAGES: tuple[str, ...] = ("features", "processing")
"""Zipped for `spark-submit --py-files` so the driver and every executor import them."""

PROCESSING_ROOT = "/opt/ml/processing"
SOURCE_DIR = f"{PROCESSING_ROOT}/source"
SPARK_OUTPUT_DIR = f"{PROCESSING_ROOT}/output"
SPARK_OUTPUTS: tuple[str, ...] = ("train", "validation", "test", "parquet", "snapshots")
PR_AUC_JSON_PATH = "binary_classification_metrics.pr_auc.value"
RECALL_JSON_PATH = "binary_classification_metrics.recall.value"
"""Recall at the decision threshold (spec.DECISION_THRESHOLD), as processing/evaluate.py writes it."""

STEP_AGGREGATE = "AggregateFeatures"
STEP_TRAIN = "TrainModel"
STEP_EVALUATE = "EvaluateModel"
STEP_CHECK = "CheckPrAuc"
STEP_REGISTER = "RegisterModel"
STEP_DEPLOY = "DeployModel"
STEP_FAIL = "PrAucBelowThreshold"


class DefinitionError(ValueError):
    """Bad input to the definition (user error: one-line message on the CLI)."""


# --------------------------------------------------------------------------- code bundle
@dataclass(frozen=True)
class CodeBundle:
    """The files the jobs run, keyed by path under the code prefix, and their content hash."""

    version: str
    files: dict[str, bytes] = field(repr=False)


def _package_files(root: Path, packages: tuple[str, ...]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _deterministic_zip(files: dict[str, bytes]) -> bytes:
    """A zip whose bytes depend only on the contents (fixed timestamps), so hashes are stable."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name], compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def build_code_bundle(root: Path = REPO_ROOT) -> CodeBundle:
    """`src/<package>/...py` for the processing jobs plus `deps.zip` for Spark's --py-files."""
    sources = _package_files(root, CODE_PACKAGES)
    if "features/spec.py" not in sources:
        raise DefinitionError(f"features/spec.py not found under {root}")
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + hashlib.sha256(sources[name]).digest())
    files = {f"src/{name}": content for name, content in sources.items()}
    files["deps.zip"] = _deterministic_zip(
        {n: c for n, c in sources.items() if n.split("/", 1)[0] in SPARK_PY_FILES_PACKAGES}
    )
    return CodeBundle(version=digest.hexdigest()[:16], files=files)


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class PipelineConfig:
    """Everything that names AWS resources; the rest is pipeline parameters."""

    region: str
    role_arn: str
    bucket: str
    pipeline_name: str = spec.PIPELINE_NAME
    model_package_group_name: str = spec.MODEL_PACKAGE_GROUP
    deploy_lambda_arn: str = ""
    feature_group_name: str = spec.BATCH_FEATURE_GROUP.name
    prefix: str = DEFAULT_PREFIX
    code_version: str = ""

    @property
    def partition(self) -> str:
        return self.role_arn.split(":")[1]

    @property
    def account_id(self) -> str:
        return self.role_arn.split(":")[4]

    @property
    def base_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def code_uri(self) -> str:
        return f"{self.base_uri}/code/{self.code_version}"


def parse_role_arn(role_arn: str) -> tuple[str, str]:
    """(partition, account id) of an IAM role ARN, or DefinitionError."""
    parts = role_arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam" or not parts[5].startswith("role/"):
        raise DefinitionError(
            f"not an IAM role ARN: {role_arn!r} (expected arn:aws:iam::<account>:role/<name>)"
        )
    if not (parts[4].isdigit() and len(parts[4]) == 12):
        raise DefinitionError(f"IAM role ARN {role_arn!r} has no 12-digit account id")
    return parts[1], parts[4]


def make_config(
    region: str | None = None,
    role_arn: str | None = None,
    bucket: str | None = None,
    *,
    pipeline_name: str = spec.PIPELINE_NAME,
    model_package_group_name: str = spec.MODEL_PACKAGE_GROUP,
    deploy_lambda: str | None = None,
    feature_group_name: str = spec.BATCH_FEATURE_GROUP.name,
    prefix: str = DEFAULT_PREFIX,
    code_version: str | None = None,
) -> PipelineConfig:
    """Fill defaults: region from the environment, account from the role, Lambda ARN from its name."""
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    role_arn = role_arn or PLACEHOLDER_ROLE_ARN
    partition, account = parse_role_arn(role_arn)
    bucket = bucket or f"sagemaker-{region}-{account}"
    deploy_lambda = deploy_lambda or DEPLOY_LAMBDA_NAME
    if deploy_lambda.startswith("arn:"):
        lambda_arn = deploy_lambda
    else:
        lambda_arn = f"arn:{partition}:lambda:{region}:{account}:function:{deploy_lambda}"
    return PipelineConfig(
        region=region,
        role_arn=role_arn,
        bucket=bucket,
        pipeline_name=pipeline_name,
        model_package_group_name=model_package_group_name,
        deploy_lambda_arn=lambda_arn,
        feature_group_name=feature_group_name,
        prefix=prefix.strip("/"),
        code_version=code_version or build_code_bundle().version,
    )


# --------------------------------------------------------------------------- offline SDK
_OFFLINE_ENV = {
    "AWS_ACCESS_KEY_ID": "offline-definition",
    "AWS_SECRET_ACCESS_KEY": "offline-definition",
    "AWS_EC2_METADATA_DISABLED": "true",
    "SAGEMAKER_VALIDATE_ROLE": "false",
}
_OFFLINE_UNSET = (
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
_SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


@contextlib.contextmanager
def _validate_sdk_config_once() -> Iterator[None]:
    """The SDK re-validates its config against a large JSON schema on every lookup (~0.2 s each,
    ~50 per build); ours is a constant, so validate it once and skip the repeats."""
    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.__dict__["validate_sagemaker_config"]
    original.__func__(_SDK_CONFIG)

    def validate(sagemaker_config: dict | None = None) -> None:
        if sagemaker_config is not _SDK_CONFIG:
            original.__func__(sagemaker_config)

    SageMakerConfig.validate_sagemaker_config = staticmethod(validate)
    try:
        yield
    finally:
        SageMakerConfig.validate_sagemaker_config = original


@contextlib.contextmanager
def offline_aws(region: str, bucket: str) -> Iterator[Any]:
    """Dummy credentials and region for the SDK's import- and build-time boto3 clients.

    The SDK builds clients at import (`sagemaker.ai_registry`), in step constructors
    (`LocalSagemakerClient()`), and validates roles through IAM; with real credentials
    missing, botocore would probe the instance metadata service. Everything is restored on
    exit so a later real call (upsert) in the same process uses the caller's credentials.
    Yields a PipelineSession whose clients can never reach AWS with real credentials.
    """
    import logging
    import warnings

    import boto3

    saved_env = {
        k: os.environ.get(k) for k in (*_OFFLINE_ENV, *_OFFLINE_UNSET, "AWS_DEFAULT_REGION", "AWS_REGION")
    }
    saved_default = boto3.DEFAULT_SESSION
    saved_disable = logging.root.manager.disable
    try:
        os.environ.update(_OFFLINE_ENV)
        for key in _OFFLINE_UNSET:
            os.environ.pop(key, None)
        os.environ["AWS_DEFAULT_REGION"] = region
        os.environ["AWS_REGION"] = region
        boto3.setup_default_session(
            aws_access_key_id="offline-definition",
            aws_secret_access_key="offline-definition",
            region_name=region,
        )
        logging.disable(logging.WARNING)  # the SDK logs INFO/DEBUG/WARNING chatter on every step
        with warnings.catch_warnings(), _validate_sdk_config_once():
            warnings.simplefilter("ignore")
            from sagemaker.core.workflow.pipeline_context import PipelineSession

            boto_session = boto3.Session(
                aws_access_key_id="offline-definition",
                aws_secret_access_key="offline-definition",
                region_name=region,
            )
            session = PipelineSession(
                boto_session=boto_session, default_bucket=bucket, sagemaker_config=_SDK_CONFIG
            )
            # default_bucket() would check (HeadBucket/CreateBucket) the named bucket; the
            # resolved-name slot short-circuits that, and upsert checks the bucket for real.
            session._default_bucket = bucket
            yield session
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        boto3.DEFAULT_SESSION = saved_default
        logging.disable(saved_disable)


# --------------------------------------------------------------------------- the pipeline
def _hyperparameters() -> dict[str, str]:
    """training/train.py's defaults, with the number the built-in algorithm needs for scale_pos_weight."""
    from training.train import AWS_SCALE_POS_WEIGHT, DEFAULT_HYPERPARAMETERS

    merged = {**DEFAULT_HYPERPARAMETERS, "scale_pos_weight": AWS_SCALE_POS_WEIGHT}
    return {name: str(value) for name, value in merged.items()}


def _build(config: PipelineConfig, session: Any) -> Any:
    """All steps; runs inside offline_aws()."""
    from sagemaker.core import image_uris
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.core.processing import ScriptProcessor
    from sagemaker.core.shapes import (
        MetricsSource,
        ModelMetrics,
        ModelQuality,
        OutputDataConfig,
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
        StoppingCondition,
    )
    from sagemaker.core.spark.processing import PySparkProcessor
    from sagemaker.core.workflow.conditions import ConditionGreaterThan, ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaOutputTypeEnum, LambdaStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep
    from sagemaker.serve.model_builder import ModelBuilder
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData

    kinds = {"String": ParameterString, "Integer": ParameterInteger, "Float": ParameterFloat}
    params = {
        p.name: kinds[p.type](name=p.name, default_value=p.default)
        for p in parameter_specs(config.bucket, config.prefix)
    }
    region, role = config.region, config.role_arn
    code = config.code_uri

    def run_uri(*parts: str) -> Any:
        """s3://bucket/prefix/executions/<execution id>/<parts>: every run writes its own prefix."""
        return Join(
            on="/", values=[config.base_uri, "executions", ExecutionVariables.PIPELINE_EXECUTION_ID, *parts]
        )

    # The py312 flavour of the Spark 3.5 image: the job's code (and features/) needs Python >= 3.11.
    spark_image = image_uris.retrieve(
        "spark",
        region=region,
        version=SPARK_VERSION,
        py_version=SPARK_PY_VERSION,
        instance_type="ml.m5.xlarge",
    )
    xgboost_image = image_uris.retrieve("xgboost", region=region, version=XGBOOST_VERSION)
    # No step caching (docs/aws.md, "Caching"): a cache key is built from the step's arguments, and
    # the training/evaluation inputs live under the execution id, so a key would never repeat; with
    # stable prefixes instead, a hit would reuse a model trained on the data that was under
    # InputDataUrl the last time, although the transactions there change every night.

    # 1. Spark: aggregates, training data, snapshot ingestion into the batch feature group.
    spark = PySparkProcessor(
        role=role,
        image_uri=spark_image,
        instance_type=params["ProcessingInstanceType"],
        instance_count=params["ProcessingInstanceCount"],
        max_runtime_in_seconds=4 * 3600,
        base_job_name=f"{config.prefix}-aggregate",
        sagemaker_session=session,
        env={"AWS_DEFAULT_REGION": region},
    )
    aggregate_args = spark.run(
        submit_app=f"{code}/src/processing/aggregate.py",
        submit_py_files=[f"{code}/deps.zip"],
        arguments=[
            "--input",
            params["InputDataUrl"],
            "--output",
            run_uri("features"),
            # One token so an empty SnapshotDate (= the run day) stays a valid argument.
            Join(on="", values=["--snapshot-date=", params["SnapshotDate"]]),
            "--feature-group",
            config.feature_group_name,
            "--feature-store",
            "sagemaker",
            "--region",
            region,
            # Integer parameters become strings inside one token (ContainerArguments is a string list).
            Join(on="", values=["--history-days=", params["HistoryDays"]]),
            Join(on="", values=["--validation-days=", params["ValidationDays"]]),
            Join(on="", values=["--test-days=", params["TestDays"]]),
        ],
        # Spark writes straight to S3 (part files from the executors of every instance, so any
        # ProcessingInstanceCount is correct); the outputs declare the same prefixes so training
        # and evaluation read them through step properties (dependency, lineage, cache reuse).
        # Their local directories stay empty: the end-of-job upload adds nothing.
        outputs=[
            ProcessingOutput(
                output_name=name,
                s3_output=ProcessingS3Output(
                    s3_uri=run_uri("features", name),
                    local_path=f"{SPARK_OUTPUT_DIR}/{name}",
                    s3_upload_mode="EndOfJob",
                ),
            )
            for name in SPARK_OUTPUTS
        ],
    )
    step_aggregate = ProcessingStep(
        name=STEP_AGGREGATE,
        step_args=aggregate_args,
        display_name="Aggregate features (Spark)",
        description=(
            "PySpark on the Spark 3.5 processing image: 10-minute and 1-week-snapshot aggregates and ratios "
            f"from features/spec.py, time-based train/validation/test split, and ingestion of the run day's "
            f"1-week snapshot into the {config.feature_group_name} online feature group."
        ),
    )
    features_out = step_aggregate.properties.ProcessingOutputConfig.Outputs

    # 2. Training: the built-in XGBoost algorithm on label-first CSV channels.
    trainer = ModelTrainer(
        training_image=xgboost_image,
        role=role,
        sagemaker_session=session,
        base_job_name=f"{config.prefix}-train",
        compute=Compute(instance_type=params["TrainingInstanceType"], instance_count=1, volume_size_in_gb=30),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=2 * 3600),
        hyperparameters=_hyperparameters(),
        output_data_config=OutputDataConfig(s3_output_path=f"{config.base_uri}/models"),
        input_data_config=[
            InputData(
                channel_name=channel,
                data_source=features_out[channel].S3Output.S3Uri,
                content_type="text/csv",
            )
            for channel in ("train", "validation")
        ],
    )
    step_train = TrainingStep(
        name=STEP_TRAIN,
        step_args=trainer.train(),
        display_name="Train XGBoost",
        description="Built-in XGBoost algorithm (binary:logistic, aucpr, early stopping) on the train/validation CSV.",
    )
    model_data = step_train.properties.ModelArtifacts.S3ModelArtifacts

    # 3. Evaluation: processing/evaluate.py on the test split, evaluation.json as a property file.
    evaluator = ScriptProcessor(
        role=role,
        image_uri=xgboost_image,
        command=["python3"],
        instance_type="ml.m5.xlarge",
        instance_count=1,
        max_runtime_in_seconds=3600,
        base_job_name=f"{config.prefix}-evaluate",
        sagemaker_session=session,
        env={"PYTHONPATH": SOURCE_DIR},
    )
    evaluation_report = PropertyFile(
        name="EvaluationReport", output_name="evaluation", path="evaluation.json"
    )
    evaluate_args = evaluator.run(
        code=f"{code}/src/processing/evaluate.py",
        inputs=[
            ProcessingInput(
                input_name="model",
                s3_input=ProcessingS3Input(
                    s3_uri=model_data,
                    local_path=f"{PROCESSING_ROOT}/model",
                    s3_data_type="S3Prefix",
                    s3_input_mode="File",
                ),
            ),
            ProcessingInput(
                input_name="test",
                s3_input=ProcessingS3Input(
                    s3_uri=features_out["test"].S3Output.S3Uri,
                    local_path=f"{PROCESSING_ROOT}/test",
                    s3_data_type="S3Prefix",
                    s3_input_mode="File",
                ),
            ),
            ProcessingInput(
                input_name="source",
                s3_input=ProcessingS3Input(
                    s3_uri=f"{code}/src/",
                    local_path=SOURCE_DIR,
                    s3_data_type="S3Prefix",
                    s3_input_mode="File",
                ),
            ),
        ],
        outputs=[
            ProcessingOutput(
                output_name="evaluation",
                s3_output=ProcessingS3Output(
                    s3_uri=run_uri("evaluation"),
                    local_path=f"{PROCESSING_ROOT}/evaluation",
                    s3_upload_mode="EndOfJob",
                ),
            )
        ],
        arguments=[
            "--model",
            f"{PROCESSING_ROOT}/model",
            "--test",
            f"{PROCESSING_ROOT}/test",
            "--output",
            f"{PROCESSING_ROOT}/evaluation",
        ],
    )
    step_evaluate = ProcessingStep(
        name=STEP_EVALUATE,
        step_args=evaluate_args,
        display_name="Evaluate on the test split",
        description="processing/evaluate.py: evaluation.json (model-quality format: auc, pr_auc, precision, recall, f1) and PR/ROC curves.",
        property_files=[evaluation_report],
    )
    evaluation_uri = step_evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    pr_auc = JsonGet(
        step_name=step_evaluate.name, property_file=evaluation_report, json_path=PR_AUC_JSON_PATH
    )
    recall = JsonGet(
        step_name=step_evaluate.name, property_file=evaluation_report, json_path=RECALL_JSON_PATH
    )

    # 4. Register with the metrics attached; approval status from the parameter.
    model = ModelBuilder(
        s3_model_data_url=model_data,
        image_uri=xgboost_image,
        role_arn=role,
        sagemaker_session=session,
    )
    register_args = model.register(
        model_package_group_name=config.model_package_group_name,
        content_types=["text/csv"],
        response_types=["text/csv"],
        inference_instances=["ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge"],
        transform_instances=["ml.m5.xlarge"],
        model_metrics=ModelMetrics(
            model_quality=ModelQuality(
                statistics=MetricsSource(
                    content_type="application/json",
                    s3_uri=Join(on="/", values=[evaluation_uri, "evaluation.json"]),
                )
            )
        ),
        approval_status=params["ModelApprovalStatus"],
    )
    _drop_empty_environment(register_args)
    step_register = ModelStep(
        name=STEP_REGISTER,
        step_args=register_args,
        display_name="Register model version",
        description=f"New version in the {config.model_package_group_name} model package group with evaluation.json as model-quality metrics.",
    )

    # 5. Deploy: the deploy_model Lambda deploys only Approved packages (else a no-op result).
    step_deploy = LambdaStep(
        name=STEP_DEPLOY,
        lambda_func=Lambda(function_arn=config.deploy_lambda_arn, session=session),
        display_name="Deploy if approved",
        description="Invokes lambdas/deploy_model: blue/green create-or-update of the endpoint when the version is Approved.",
        inputs={
            "model_package_arn": step_register.properties.ModelPackageArn,
            "endpoint_name": params["EndpointName"],
        },
        outputs=[
            LambdaOutput(output_name=name, output_type=LambdaOutputTypeEnum.String)
            for name in ("status", "endpoint_config_name")
        ],
    )

    step_fail = FailStep(
        name=STEP_FAIL,
        display_name="Quality gate failed",
        description=(
            "Stops the run when the test pr_auc is under MinPrAuc or the model flags no fraud at the "
            "decision threshold (recall 0); nothing is registered."
        ),
        error_message=Join(
            on=" ",
            values=[
                "Quality gate failed: test pr_auc",
                pr_auc,
                "(MinPrAuc",
                Join(on="", values=[params["MinPrAuc"], "),"]),
                f"recall at threshold {spec.DECISION_THRESHOLD}",
                recall,
                "(must be > 0) - model not registered.",
            ],
        ),
    )

    step_check = ConditionStep(
        name=STEP_CHECK,
        display_name="pr_auc >= MinPrAuc and recall > 0?",
        description=(
            f"Quality gate on evaluation.json: {PR_AUC_JSON_PATH} >= MinPrAuc and {RECALL_JSON_PATH} > 0 "
            "(a model that flags nothing at the decision threshold is useless whatever its pr_auc)."
        ),
        # A ConditionStep's conditions must all hold (logical AND).
        conditions=[
            ConditionGreaterThanOrEqualTo(left=pr_auc, right=params["MinPrAuc"]),
            ConditionGreaterThan(left=recall, right=0.0),
        ],
        if_steps=[step_register, step_deploy],
        else_steps=[step_fail],
    )

    return Pipeline(
        name=config.pipeline_name,
        parameters=list(params.values()),
        steps=[step_aggregate, step_train, step_evaluate, step_check],
        sagemaker_session=session,
        # No automatic SageMaker Experiments trial per run: it would need Experiments permissions on
        # the execution role (least privilege), and Studio's pipeline view already tracks every run.
        pipeline_experiment_config=None,
    )


def _drop_empty_environment(register_args: Any) -> None:
    """ModelBuilder adds script-mode variables with empty values; the built-in image needs none."""
    request = getattr(register_args, "create_model_package_request", None) or {}
    for container in request.get("InferenceSpecification", {}).get("Containers", []):
        env = container.get("Environment") or {}
        for key in [k for k, v in env.items() if v == ""]:
            del env[key]


def get_pipeline(
    region: str | None = None,
    role_arn: str | None = None,
    bucket: str | None = None,
    *,
    pipeline_name: str = spec.PIPELINE_NAME,
    model_package_group_name: str = spec.MODEL_PACKAGE_GROUP,
    deploy_lambda: str | None = None,
    feature_group_name: str = spec.BATCH_FEATURE_GROUP.name,
    prefix: str = DEFAULT_PREFIX,
    code_version: str | None = None,
) -> Any:
    """The `sagemaker.mlops.workflow.pipeline.Pipeline` (built offline).

    Call `.definition()` on it inside `offline_aws(region, bucket)` too, or use `pipeline_definition`,
    which does both: rendering the steps runs SDK code that creates clients again.
    """
    config = make_config(
        region,
        role_arn,
        bucket,
        pipeline_name=pipeline_name,
        model_package_group_name=model_package_group_name,
        deploy_lambda=deploy_lambda,
        feature_group_name=feature_group_name,
        prefix=prefix,
        code_version=code_version,
    )
    with offline_aws(config.region, config.bucket) as session:
        return _build(config, session)


def pipeline_definition(config: PipelineConfig) -> str:
    """The pipeline definition JSON (what CreatePipeline takes), generated offline."""
    with offline_aws(config.region, config.bucket) as session:
        definition = json.loads(_build(config, session).definition())
    # SDK 3.x emits null top-level keys (MlflowConfig, PipelineExperimentConfig): leave them out.
    definition = {key: value for key, value in definition.items() if value is not None}
    return json.dumps(definition, indent=2)
