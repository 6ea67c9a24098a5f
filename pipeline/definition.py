"""The SageMaker Pipeline, built with the SageMaker Python SDK 3.x in one function.

    aggregate (PySpark, Spark 3.5) -> train (built-in XGBoost) -> evaluate
        -> pr_auc >= MinPrAuc and recall > 0 (at the decision threshold) ?
        yes: register (model package group, metrics) -> deploy (Lambda deploy_model)
        no:  fail (message carries the measured pr_auc and recall)

The definition is generated offline (no credentials, no network) inside
`pipeline.offline_sdk.offline_aws()`, and every code artifact is referenced by an S3 URI derived
from a content hash of the local sources (`pipeline.code_bundle`): the SDK never uploads
anything, and `upsert` uploads exactly the bundle the definition names. The graph is
`get_pipeline`; docs/design.md has the contracts between the steps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from features import spec
from pipeline.code_bundle import (  # noqa: F401  (re-exported: the CLI and tests use these names here)
    CODE_PACKAGES,
    REPO_ROOT,
    SPARK_PY_FILES_PACKAGES,
    CodeBundle,
    DefinitionError,
    build_code_bundle,
)
from pipeline.offline_sdk import offline_aws
from pipeline.parameters import DEFAULT_PREFIX, parameter_specs

SPARK_VERSION = "3.5"
SPARK_PY_VERSION = "py312"
XGBOOST_VERSION = "3.0-5"
"""Built-in XGBoost image; matches the pinned local xgboost (3.0.5) so one artifact serves both."""

DEPLOY_LAMBDA_NAME = f"{DEFAULT_PREFIX}-deploy-model"
"""Placeholder for the offline `definition` printout only: `upsert` takes the function from the pipeline
stack's output DeployModelFunctionArn (`--stack` or `--deploy-lambda`), since the name follows NamePrefix."""

PLACEHOLDER_ACCOUNT = "111122223333"
PLACEHOLDER_ROLE_ARN = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/{DEFAULT_PREFIX}-sagemaker-execution"

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


# --------------------------------------------------------------------------- the pipeline
def _hyperparameters() -> dict[str, str]:
    """training/train.py's defaults, with the number the built-in algorithm needs for scale_pos_weight."""
    from training.train import AWS_SCALE_POS_WEIGHT, DEFAULT_HYPERPARAMETERS

    merged = {**DEFAULT_HYPERPARAMETERS, "scale_pos_weight": AWS_SCALE_POS_WEIGHT}
    return {name: str(value) for name, value in merged.items()}


@dataclass(frozen=True)
class _Build:
    """What every step builder needs: the names, the offline SDK session, the parameters, the images."""

    config: PipelineConfig
    session: Any
    params: dict[str, Any]
    spark_image: str
    xgboost_image: str

    @property
    def role(self) -> str:
        return self.config.role_arn

    def run_uri(self, *parts: str) -> Any:
        """s3://bucket/prefix/executions/<execution id>/<parts>: every run writes its own prefix."""
        from sagemaker.core.workflow.execution_variables import ExecutionVariables
        from sagemaker.core.workflow.functions import Join

        return Join(
            on="/",
            values=[self.config.base_uri, "executions", ExecutionVariables.PIPELINE_EXECUTION_ID, *parts],
        )


def _build(config: PipelineConfig, session: Any) -> Any:
    """The graph (runs inside offline_aws()); each step is built by the function named after it.

    aggregate -> train -> evaluate -> CheckPrAuc ? register + deploy : fail. No step caching
    (docs/aws.md, "Caching"): a cache key is built from the step's arguments, and the training and
    evaluation inputs live under the execution id, so a key would never repeat; with stable
    prefixes instead, a hit would reuse a model trained on the data that was under InputDataUrl
    the last time, although the transactions there change every night.
    """
    from sagemaker.core.workflow.conditions import ConditionGreaterThan, ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.functions import JsonGet
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    b = _context(config, session)
    step_aggregate = _aggregate_step(b)
    features_out = step_aggregate.properties.ProcessingOutputConfig.Outputs
    step_train = _train_step(b, features_out)
    model_data = step_train.properties.ModelArtifacts.S3ModelArtifacts
    step_evaluate, evaluation_report = _evaluate_step(b, features_out, model_data)
    evaluation_uri = step_evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    pr_auc = JsonGet(
        step_name=step_evaluate.name, property_file=evaluation_report, json_path=PR_AUC_JSON_PATH
    )
    recall = JsonGet(
        step_name=step_evaluate.name, property_file=evaluation_report, json_path=RECALL_JSON_PATH
    )
    step_register = _register_step(b, model_data, evaluation_uri)
    step_deploy = _deploy_step(b, step_register.properties.ModelPackageArn)
    step_fail = _fail_step(b, pr_auc, recall)
    step_check = ConditionStep(
        name=STEP_CHECK,
        display_name="pr_auc >= MinPrAuc and recall > 0?",
        description=(
            f"Quality gate on evaluation.json: {PR_AUC_JSON_PATH} >= MinPrAuc and {RECALL_JSON_PATH} > 0 "
            "(a model that flags nothing at the decision threshold is useless whatever its pr_auc)."
        ),
        # A ConditionStep's conditions must all hold (logical AND).
        conditions=[
            ConditionGreaterThanOrEqualTo(left=pr_auc, right=b.params["MinPrAuc"]),
            ConditionGreaterThan(left=recall, right=0.0),
        ],
        if_steps=[step_register, step_deploy],
        else_steps=[step_fail],
    )

    return Pipeline(
        name=config.pipeline_name,
        parameters=list(b.params.values()),
        steps=[step_aggregate, step_train, step_evaluate, step_check],
        sagemaker_session=session,
        # No automatic SageMaker Experiments trial per run: it would need Experiments permissions on
        # the execution role (least privilege), and Studio's pipeline view already tracks every run.
        pipeline_experiment_config=None,
    )


def _context(config: PipelineConfig, session: Any) -> _Build:
    """Pipeline parameters (pipeline/parameters.py) and the two images of the region."""
    from sagemaker.core import image_uris
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    kinds = {"String": ParameterString, "Integer": ParameterInteger, "Float": ParameterFloat}
    params = {
        p.name: kinds[p.type](name=p.name, default_value=p.default)
        for p in parameter_specs(config.bucket, config.prefix)
    }
    # The py312 flavour of the Spark 3.5 image: the job's code (and features/) needs Python >= 3.11.
    spark_image = image_uris.retrieve(
        "spark",
        region=config.region,
        version=SPARK_VERSION,
        py_version=SPARK_PY_VERSION,
        instance_type="ml.m5.xlarge",
    )
    xgboost_image = image_uris.retrieve("xgboost", region=config.region, version=XGBOOST_VERSION)
    return _Build(config, session, params, spark_image, xgboost_image)


def _aggregate_step(b: _Build) -> Any:
    """1. Spark: aggregates, training data, snapshot ingestion into the batch feature group."""
    from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output
    from sagemaker.core.spark.processing import PySparkProcessor
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.steps import ProcessingStep

    spark = PySparkProcessor(
        role=b.role,
        image_uri=b.spark_image,
        instance_type=b.params["ProcessingInstanceType"],
        instance_count=b.params["ProcessingInstanceCount"],
        max_runtime_in_seconds=4 * 3600,
        base_job_name=f"{b.config.prefix}-aggregate",
        sagemaker_session=b.session,
        env={"AWS_DEFAULT_REGION": b.config.region},
    )
    aggregate_args = spark.run(
        submit_app=f"{b.config.code_uri}/src/processing/aggregate.py",
        submit_py_files=[f"{b.config.code_uri}/deps.zip"],
        arguments=[
            "--input",
            b.params["InputDataUrl"],
            "--output",
            b.run_uri("features"),
            # One token so an empty SnapshotDate (= the run day) stays a valid argument.
            Join(on="", values=["--snapshot-date=", b.params["SnapshotDate"]]),
            "--feature-group",
            b.config.feature_group_name,
            "--feature-store",
            "sagemaker",
            "--region",
            b.config.region,
            # Integer parameters become strings inside one token (ContainerArguments is a string list).
            Join(on="", values=["--history-days=", b.params["HistoryDays"]]),
            Join(on="", values=["--validation-days=", b.params["ValidationDays"]]),
            Join(on="", values=["--test-days=", b.params["TestDays"]]),
        ],
        # Spark writes straight to S3 (part files from the executors of every instance, so any
        # ProcessingInstanceCount is correct); the outputs declare the same prefixes so training
        # and evaluation read them through step properties (dependency, lineage, cache reuse).
        # Their local directories stay empty: the end-of-job upload adds nothing.
        outputs=[
            ProcessingOutput(
                output_name=name,
                s3_output=ProcessingS3Output(
                    s3_uri=b.run_uri("features", name),
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
            f"1-week snapshot into the {b.config.feature_group_name} online feature group."
        ),
    )
    return step_aggregate


def _train_step(b: _Build, features_out: Any) -> Any:
    """2. Training: the built-in XGBoost algorithm on label-first CSV channels."""
    from sagemaker.core.shapes import OutputDataConfig, StoppingCondition
    from sagemaker.mlops.workflow.steps import TrainingStep
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData

    trainer = ModelTrainer(
        training_image=b.xgboost_image,
        role=b.role,
        sagemaker_session=b.session,
        base_job_name=f"{b.config.prefix}-train",
        compute=Compute(
            instance_type=b.params["TrainingInstanceType"], instance_count=1, volume_size_in_gb=30
        ),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=2 * 3600),
        hyperparameters=_hyperparameters(),
        output_data_config=OutputDataConfig(s3_output_path=f"{b.config.base_uri}/models"),
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
    return step_train


def _evaluate_step(b: _Build, features_out: Any, model_data: Any) -> tuple[Any, Any]:
    """3. Evaluation: processing/evaluate.py on the test split, evaluation.json as a property file."""
    from sagemaker.core.processing import ScriptProcessor
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    evaluator = ScriptProcessor(
        role=b.role,
        image_uri=b.xgboost_image,
        command=["python3"],
        instance_type="ml.m5.xlarge",
        instance_count=1,
        max_runtime_in_seconds=3600,
        base_job_name=f"{b.config.prefix}-evaluate",
        sagemaker_session=b.session,
        env={"PYTHONPATH": SOURCE_DIR},
    )
    evaluation_report = PropertyFile(
        name="EvaluationReport", output_name="evaluation", path="evaluation.json"
    )
    evaluate_args = evaluator.run(
        code=f"{b.config.code_uri}/src/processing/evaluate.py",
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
                    s3_uri=f"{b.config.code_uri}/src/",
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
                    s3_uri=b.run_uri("evaluation"),
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
    return step_evaluate, evaluation_report


def _register_step(b: _Build, model_data: Any, evaluation_uri: Any) -> Any:
    """4. Register with the metrics attached; approval status from the parameter."""
    from sagemaker.core.shapes import MetricsSource, ModelMetrics, ModelQuality
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.serve.model_builder import ModelBuilder

    model = ModelBuilder(
        s3_model_data_url=model_data,
        image_uri=b.xgboost_image,
        role_arn=b.role,
        sagemaker_session=b.session,
    )
    register_args = model.register(
        model_package_group_name=b.config.model_package_group_name,
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
        approval_status=b.params["ModelApprovalStatus"],
    )
    _drop_empty_environment(register_args)
    step_register = ModelStep(
        name=STEP_REGISTER,
        step_args=register_args,
        display_name="Register model version",
        description=f"New version in the {b.config.model_package_group_name} model package group with evaluation.json as model-quality metrics.",
    )

    return step_register


def _deploy_step(b: _Build, model_package_arn: Any) -> Any:
    """5. Deploy: the deploy_model Lambda deploys only Approved packages (else a no-op result)."""
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaOutputTypeEnum, LambdaStep

    step_deploy = LambdaStep(
        name=STEP_DEPLOY,
        lambda_func=Lambda(function_arn=b.config.deploy_lambda_arn, session=b.session),
        display_name="Deploy if approved",
        description="Invokes lambdas/deploy_model: blue/green create-or-update of the endpoint when the version is Approved.",
        inputs={
            "model_package_arn": model_package_arn,
            "endpoint_name": b.params["EndpointName"],
        },
        outputs=[
            LambdaOutput(output_name=name, output_type=LambdaOutputTypeEnum.String)
            for name in ("status", "endpoint_config_name")
        ],
    )

    return step_deploy


def _fail_step(b: _Build, pr_auc: Any, recall: Any) -> Any:
    """The quality gate's else branch: the message carries the measured pr_auc and recall."""
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.fail_step import FailStep

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
                Join(on="", values=[b.params["MinPrAuc"], "),"]),
                f"recall at threshold {spec.DECISION_THRESHOLD}",
                recall,
                "(must be > 0) - model not registered.",
            ],
        ),
    )

    return step_fail


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
