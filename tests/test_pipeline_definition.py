"""The SageMaker pipeline definition: generated offline (network blocked, no credentials), right structure."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import zipfile
from io import BytesIO

import pytest

from features import spec
from pipeline import definition as d
from pipeline.parameters import PARAMETER_NAMES

# One worker imports the SageMaker SDK (~10 s of CPU) for every test that builds a definition.
pytestmark = pytest.mark.xdist_group("sagemaker")

ROLE = "arn:aws:iam::123456789012:role/fraud-detection-sagemaker-execution"
BUCKET = "fraud-artifacts-123456789012"
_CACHE: dict[str, dict] = {}


def _without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A machine with no AWS configuration at all."""
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


@pytest.fixture
def definition(no_network, monkeypatch, tmp_path) -> dict:
    """Built once per worker, always with the network blocked and no credentials."""
    _without_credentials(monkeypatch, tmp_path)
    if "default" not in _CACHE:
        config = d.make_config("us-east-1", ROLE, BUCKET)
        _CACHE["code_version"] = config.code_version  # the hash of the sources at build time
        _CACHE["default"] = json.loads(d.pipeline_definition(config))
    return _CACHE["default"]


def _steps(definition: dict) -> dict[str, dict]:
    steps: dict[str, dict] = {}
    for step in definition["Steps"]:
        steps[step["Name"]] = step
        for branch in ("IfSteps", "ElseSteps"):
            for inner in step.get("Arguments", {}).get(branch, []):
                steps[inner["Name"]] = inner
    return steps


def _get(name: str) -> dict:
    return {"Get": f"Parameters.{name}"}


def test_offline_build_restores_environment(definition, monkeypatch):
    # The dummy credentials, region and default session of the build do not leak into the process.
    import boto3

    monkeypatch.setenv("AWS_PROFILE", "someone")
    before = boto3.DEFAULT_SESSION
    with d.offline_aws("eu-west-1", "b") as session:
        assert os.environ["AWS_ACCESS_KEY_ID"] == "offline-definition"
        assert "AWS_PROFILE" not in os.environ
        assert session.boto_region_name == "eu-west-1"
    assert "AWS_ACCESS_KEY_ID" not in os.environ and "SAGEMAKER_VALIDATE_ROLE" not in os.environ
    assert os.environ["AWS_PROFILE"] == "someone"
    assert boto3.DEFAULT_SESSION is before


def test_steps_types_and_order(definition):
    top = [(s["Name"], s["Type"]) for s in definition["Steps"]]
    assert top == [
        ("AggregateFeatures", "Processing"),
        ("TrainModel", "Training"),
        ("EvaluateModel", "Processing"),
        ("CheckPrAuc", "Condition"),
    ]
    condition = definition["Steps"][3]["Arguments"]
    assert [(s["Name"], s["Type"]) for s in condition["IfSteps"]] == [
        ("RegisterModel", "RegisterModel"),
        ("DeployModel", "Lambda"),
    ]
    assert [(s["Name"], s["Type"]) for s in condition["ElseSteps"]] == [("PrAucBelowThreshold", "Fail")]
    for step in _steps(definition).values():
        assert step["DisplayName"] and step["Description"], step["Name"]


def test_parameters_exact_names_types_defaults(definition):
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert (
        tuple(params)
        == PARAMETER_NAMES
        == (
            "InputDataUrl",
            "ProcessingInstanceType",
            "ProcessingInstanceCount",
            "TrainingInstanceType",
            "ModelApprovalStatus",
            "MinPrAuc",
            "EndpointName",
            "SnapshotDate",
        )
    )
    assert params["ProcessingInstanceCount"]["Type"] == "Integer"
    assert params["MinPrAuc"] == {"Name": "MinPrAuc", "Type": "Float", "DefaultValue": 0.75}
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["EndpointName"]["DefaultValue"] == spec.ENDPOINT_NAME
    assert params["SnapshotDate"]["DefaultValue"] == ""
    assert params["InputDataUrl"]["DefaultValue"] == f"s3://{BUCKET}/fraud-detection/input/transactions/"
    assert set(definition) == {"Version", "Metadata", "Parameters", "Steps"}  # no null keys, no Experiments


def test_spark_step_image_code_and_parameter_wiring(definition):
    args = _steps(definition)["AggregateFeatures"]["Arguments"]
    app = args["AppSpecification"]
    assert re.fullmatch(
        r"\d{12}\.dkr\.ecr\.us-east-1\.amazonaws\.com/sagemaker-spark-processing:3\.5-cpu-py312",
        app["ImageUri"],
    )
    code = f"s3://{BUCKET}/fraud-detection/code/{_CACHE['code_version']}"
    assert app["ContainerEntrypoint"] == [
        "smspark-submit",
        "--py-files",
        f"{code}/deps.zip",
        "/opt/ml/processing/input/code/aggregate.py",
    ]
    assert {i["InputName"]: i["S3Input"]["S3Uri"] for i in args["ProcessingInputs"]} == {
        "code": f"{code}/src/processing/aggregate.py"
    }
    cluster = args["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceType"] == _get("ProcessingInstanceType")
    assert cluster["InstanceCount"] == _get("ProcessingInstanceCount")
    argv = app["ContainerArguments"]
    assert argv[argv.index("--input") + 1] == _get("InputDataUrl")
    run_prefix = [f"s3://{BUCKET}/fraud-detection", "executions", {"Get": "Execution.PipelineExecutionId"}]
    assert argv[argv.index("--output") + 1] == {"Std:Join": {"On": "/", "Values": [*run_prefix, "features"]}}
    assert argv[argv.index("--feature-group") + 1] == spec.BATCH_FEATURE_GROUP.name
    assert argv[argv.index("--feature-store") + 1] == "sagemaker"
    assert argv[argv.index("--region") + 1] == "us-east-1"
    assert {"Std:Join": {"On": "", "Values": ["--snapshot-date=", _get("SnapshotDate")]}} in argv
    # Spark writes to S3 itself; the declared outputs name the same prefixes (wiring for later steps).
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"] for o in args["ProcessingOutputConfig"]["Outputs"]}
    assert {"train", "validation", "test"} <= set(outputs)
    for name, uri in outputs.items():
        assert uri == {"Std:Join": {"On": "/", "Values": [*run_prefix, "features", name]}}
    assert "CacheConfig" not in _steps(definition)["AggregateFeatures"]  # side effect: snapshot ingestion


def test_training_step_image_channels_hyperparameters(definition):
    from training.train import DEFAULT_HYPERPARAMETERS

    step = _steps(definition)["TrainModel"]
    args = step["Arguments"]
    assert re.fullmatch(
        r"\d{12}\.dkr\.ecr\.us-east-1\.amazonaws\.com/sagemaker-xgboost:3\.0-5",
        args["AlgorithmSpecification"]["TrainingImage"],
    )
    channels = {c["ChannelName"]: c for c in args["InputDataConfig"]}
    assert set(channels) == {"train", "validation"}
    for name, channel in channels.items():
        assert channel["ContentType"] == "text/csv"
        assert channel["DataSource"]["S3DataSource"]["S3Uri"] == {
            "Get": f"Steps.AggregateFeatures.ProcessingOutputConfig.Outputs['{name}'].S3Output.S3Uri"
        }
    assert args["ResourceConfig"]["InstanceType"] == _get("TrainingInstanceType")
    assert 0 < args["StoppingCondition"]["MaxRuntimeInSeconds"] <= 24 * 3600
    hyper = args["HyperParameters"]
    assert set(hyper) == set(DEFAULT_HYPERPARAMETERS)
    assert hyper["objective"] == "binary:logistic" and hyper["eval_metric"] == "aucpr"
    assert float(hyper["scale_pos_weight"]) > 1  # the built-in algorithm needs a number, not "sqrt"
    for name in ("num_round", "max_depth", "eta", "subsample", "early_stopping_rounds"):
        assert float(hyper[name]) == float(DEFAULT_HYPERPARAMETERS[name])
    assert args["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/fraud-detection/models"
    assert step["CacheConfig"]["Enabled"] is True


def test_evaluation_step_inputs_and_property_file(definition):
    step = _steps(definition)["EvaluateModel"]
    args = step["Arguments"]
    assert args["AppSpecification"]["ImageUri"].endswith("/sagemaker-xgboost:3.0-5")
    assert args["AppSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "/opt/ml/processing/input/code/evaluate.py",
    ]
    assert args["AppSpecification"]["ContainerArguments"] == [
        "--model",
        "/opt/ml/processing/model",
        "--test",
        "/opt/ml/processing/test",
        "--output",
        "/opt/ml/processing/evaluation",
    ]
    inputs = {i["InputName"]: i["S3Input"] for i in args["ProcessingInputs"]}
    assert inputs["model"]["S3Uri"] == {"Get": "Steps.TrainModel.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["model"]["LocalPath"] == "/opt/ml/processing/model"
    assert inputs["test"]["S3Uri"] == {
        "Get": "Steps.AggregateFeatures.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"
    }
    assert inputs["source"]["LocalPath"] == args["Environment"]["PYTHONPATH"]  # features/ importable
    assert inputs["code"]["S3Uri"].endswith("/src/processing/evaluate.py")
    assert step["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]


def test_condition_json_get_path_and_threshold(definition):
    (condition,) = _steps(definition)["CheckPrAuc"]["Arguments"]["Conditions"]
    assert condition["Type"] == "GreaterThanOrEqualTo"
    assert condition["LeftValue"] == {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.EvaluateModel.PropertyFiles.EvaluationReport"},
            "Path": "binary_classification_metrics.pr_auc.value",
        }
    }
    assert condition["RightValue"] == _get("MinPrAuc")


def test_register_step_metrics_source_and_approval(definition):
    args = _steps(definition)["RegisterModel"]["Arguments"]
    assert args["ModelPackageGroupName"] == spec.MODEL_PACKAGE_GROUP
    assert args["ModelApprovalStatus"] == _get("ModelApprovalStatus")
    statistics = args["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"] == {
        "Std:Join": {
            "On": "/",
            "Values": [
                {"Get": "Steps.EvaluateModel.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"},
                "evaluation.json",
            ],
        }
    }
    (container,) = args["InferenceSpecification"]["Containers"]
    assert container["Image"].endswith("/sagemaker-xgboost:3.0-5")
    assert container["ModelDataUrl"] == {"Get": "Steps.TrainModel.ModelArtifacts.S3ModelArtifacts"}
    assert "" not in container.get("Environment", {}).values()
    assert args["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv"]


def test_lambda_step_inputs_and_fail_message(definition):
    steps = _steps(definition)
    deploy = steps["DeployModel"]
    assert (
        deploy["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:fraud-detection-deploy-model"
    )
    assert deploy["Arguments"] == {
        "model_package_arn": {"Get": "Steps.RegisterModel.ModelPackageArn"},
        "endpoint_name": _get("EndpointName"),
    }
    assert {o["OutputName"] for o in deploy["OutputParameters"]} == {"status", "endpoint_config_name"}
    message = steps["PrAucBelowThreshold"]["Arguments"]["ErrorMessage"]["Std:Join"]
    assert message["On"] == " "
    assert {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.EvaluateModel.PropertyFiles.EvaluationReport"},
            "Path": "binary_classification_metrics.pr_auc.value",
        }
    } in message["Values"]
    assert _get("MinPrAuc") in message["Values"]


def test_names_region_and_lambda_arn_follow_arguments(no_network, monkeypatch, tmp_path):
    _without_credentials(monkeypatch, tmp_path)
    config = d.make_config(
        "eu-west-1",
        "arn:aws:iam::210987654321:role/r",
        "other-bucket",
        pipeline_name="p2",
        model_package_group_name="g2",
        deploy_lambda="my-deployer",
        prefix="x/y/",
    )
    definition = json.loads(d.pipeline_definition(config))
    steps = _steps(definition)
    assert (
        ".dkr.ecr.eu-west-1.amazonaws.com/sagemaker-spark-processing:3.5-cpu-py312"
        in (steps["AggregateFeatures"]["Arguments"]["AppSpecification"]["ImageUri"])
    )
    assert steps["DeployModel"]["FunctionArn"] == "arn:aws:lambda:eu-west-1:210987654321:function:my-deployer"
    assert steps["RegisterModel"]["Arguments"]["ModelPackageGroupName"] == "g2"
    assert (
        steps["TrainModel"]["Arguments"]["OutputDataConfig"]["S3OutputPath"] == "s3://other-bucket/x/y/models"
    )


def test_bad_role_is_a_clear_error():
    with pytest.raises(d.DefinitionError, match="not an IAM role ARN"):
        d.make_config("us-east-1", "my-role", "b")
    with pytest.raises(d.DefinitionError, match="12-digit account"):
        d.make_config("us-east-1", "arn:aws:iam::123:role/r", "b")


def test_code_bundle_is_content_addressed(tmp_path):
    for package in d.CODE_PACKAGES:
        if (d.REPO_ROOT / package).exists():
            shutil.copytree(
                d.REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
            )
    first, again = d.build_code_bundle(tmp_path), d.build_code_bundle(tmp_path)
    assert first.version == again.version and first.files["deps.zip"] == again.files["deps.zip"]
    names = zipfile.ZipFile(BytesIO(first.files["deps.zip"])).namelist()
    assert "features/spec.py" in names and "features/__init__.py" in names
    assert not any(n.startswith("training/") for n in names)  # Spark needs features + processing only
    assert "src/features/spec.py" in first.files
    (tmp_path / "features" / "spec.py").write_text(
        (tmp_path / "features" / "spec.py").read_text() + "\n# changed\n"
    )
    assert d.build_code_bundle(tmp_path).version != first.version


def test_cli_definition_prints_json(no_network, monkeypatch, tmp_path, capsys):
    from pipeline import aws_cli

    _without_credentials(monkeypatch, tmp_path)
    parser = argparse.ArgumentParser()
    aws_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["definition", "--region", "us-east-1", "--role-arn", ROLE, "--bucket", BUCKET])
    assert args.handler(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [s["Type"] for s in printed["Steps"]] == ["Processing", "Training", "Processing", "Condition"]
