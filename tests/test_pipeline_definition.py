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
            "HistoryDays",
            "ValidationDays",
            "TestDays",
        )
    )
    assert params["ProcessingInstanceCount"]["Type"] == "Integer"
    assert params["MinPrAuc"] == {"Name": "MinPrAuc", "Type": "Float", "DefaultValue": 0.70}
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["EndpointName"]["DefaultValue"] == spec.ENDPOINT_NAME
    assert params["SnapshotDate"]["DefaultValue"] == ""
    for name in ("HistoryDays", "ValidationDays", "TestDays"):
        assert params[name] == {"Name": name, "Type": "Integer", "DefaultValue": 14}
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
    for flag, param in (("history", "HistoryDays"), ("validation", "ValidationDays"), ("test", "TestDays")):
        assert {"Std:Join": {"On": "", "Values": [f"--{flag}-days=", _get(param)]}} in argv
    # ... and processing/aggregate.py parses the arguments as resolved (parameters -> their defaults).
    from processing import aggregate

    defaults = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}

    def resolved(token):
        if isinstance(token, str):
            return token
        if "Get" in token:
            return str(defaults.get(token["Get"].removeprefix("Parameters."), "x"))
        return "".join(resolved(v) for v in token["Std:Join"]["Values"])

    job = aggregate.build_parser().parse_args([resolved(t) for t in argv])
    assert (job.history_days, job.validation_days, job.test_days) == (14, 14, 14)
    assert job.snapshot_date == "" and job.feature_store == "sagemaker"
    # Spark writes to S3 itself; the declared outputs name the same prefixes (wiring for later steps).
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"] for o in args["ProcessingOutputConfig"]["Outputs"]}
    assert {"train", "validation", "test"} <= set(outputs)
    for name, uri in outputs.items():
        assert uri == {"Std:Join": {"On": "/", "Values": [*run_prefix, "features", name]}}
    # No step caches (docs/aws.md "Caching": keys under the execution id never repeat).
    assert not any("CacheConfig" in step for step in _steps(definition).values())


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
    pr_auc, recall = _steps(definition)["CheckPrAuc"]["Arguments"]["Conditions"]
    assert pr_auc["Type"] == "GreaterThanOrEqualTo"
    assert pr_auc["LeftValue"] == {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.EvaluateModel.PropertyFiles.EvaluationReport"},
            "Path": "binary_classification_metrics.pr_auc.value",
        }
    }
    assert pr_auc["RightValue"] == _get("MinPrAuc")
    # A model that flags nothing at the decision threshold fails the gate whatever its pr_auc.
    assert recall == {
        "Type": "GreaterThan",
        "LeftValue": {
            "Std:JsonGet": {
                "PropertyFile": {"Get": "Steps.EvaluateModel.PropertyFiles.EvaluationReport"},
                "Path": "binary_classification_metrics.recall.value",
            }
        },
        "RightValue": 0.0,
    }


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
    assert {"Std:Join": {"On": "", "Values": [_get("MinPrAuc"), "),"]}} in message["Values"]
    assert {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.EvaluateModel.PropertyFiles.EvaluationReport"},
            "Path": "binary_classification_metrics.recall.value",
        }
    } in message["Values"]


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


# ---------------------------------------------------------------------------------------------
# Every step's arguments against botocore's request shapes (the API the service calls per step).
# Pipeline functions and parameters are replaced by typed placeholders first: a parameter by a
# value of its declared type, a step property by a value of the type botocore's *output* shape
# gives that property (DescribeProcessingJob, DescribeTrainingJob, DescribeModelPackage), a Join
# by a string, a JsonGet by a float. Then ParamValidator checks required members, types and
# minimum lengths, and literal strings are checked against the shape's max length and pattern.
_STEP_REQUESTS = {
    "Processing": ("sagemaker", "CreateProcessingJob", {"ProcessingJobName": "placeholder-job"}),
    "Training": ("sagemaker", "CreateTrainingJob", {"TrainingJobName": "placeholder-job"}),
    "RegisterModel": ("sagemaker", "CreateModelPackage", {}),
}
_PROPERTY_SOURCES = {
    "Processing": "DescribeProcessingJob",
    "Training": "DescribeTrainingJob",
    "RegisterModel": "DescribeModelPackage",
}
_PLACEHOLDER_BY_TYPE = {
    "string": "s3://placeholder-bucket/placeholder/key",
    "integer": 1,
    "long": 1,
    "float": 0.5,
    "double": 0.5,
    "boolean": True,
}


class _Literal(str):
    """A string that came from the definition itself (checked against patterns)."""


def _service_model(service: str):
    from botocore.session import get_session

    return get_session().get_service_model(service)


def _property_type(step_type: str, path: str) -> object:
    """Placeholder for `Steps.<step>.<path>` typed by the Describe* output shape of that step."""
    shape = _service_model("sagemaker").operation_model(_PROPERTY_SOURCES[step_type]).output_shape
    for part in re.findall(r"[A-Za-z0-9]+|\[[^\]]+\]", path):
        if part.startswith("["):
            assert shape.type_name in ("list", "map"), (path, part, shape.type_name)
            shape = shape.member if shape.type_name == "list" else shape.value
        else:
            assert shape.type_name == "structure" and part in shape.members, f"{path}: no member {part}"
            shape = shape.members[part]
    assert shape.type_name in _PLACEHOLDER_BY_TYPE, (path, shape.type_name)
    return _PLACEHOLDER_BY_TYPE[shape.type_name]


def _resolve(value, definition: dict, step_types: dict[str, str]):
    """The definition value with every pipeline function replaced by a typed placeholder."""
    if isinstance(value, dict) and set(value) == {"Get"}:
        ref = value["Get"]
        kind, _, rest = ref.partition(".")
        if kind == "Parameters":
            (param,) = [p for p in definition["Parameters"] if p["Name"] == rest]
            return {"String": "placeholder", "Integer": 7, "Float": 0.5, "Boolean": True}[param["Type"]]
        if kind == "Execution":
            return "placeholder-execution-id"
        if kind == "Steps":
            step, _, path = rest.partition(".")
            return _property_type(step_types[step], path)
        raise AssertionError(f"unknown reference {ref}")
    if isinstance(value, dict) and set(value) == {"Std:Join"}:
        parts = [_resolve(v, definition, step_types) for v in value["Std:Join"]["Values"]]
        assert all(isinstance(p, str | int | float) for p in parts), parts
        return value["Std:Join"]["On"].join(str(p) for p in parts)
    if isinstance(value, dict) and set(value) == {"Std:JsonGet"}:
        return 0.5
    if isinstance(value, dict):
        return {k: _resolve(v, definition, step_types) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, definition, step_types) for v in value]
    if isinstance(value, str):
        return _Literal(value)
    return value


def _literal_problems(value, shape, path: str = "") -> list[str]:
    """max length and pattern of literal strings (ParamValidator checks neither)."""
    problems: list[str] = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                problems += _literal_problems(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            problems += _literal_problems(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += _literal_problems(item, shape.value, f"{path}[{key}]")
    elif shape.type_name == "string" and isinstance(value, _Literal):
        meta = shape.metadata
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} characters > {meta['max']}")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value, flags=re.DOTALL):
            problems.append(f"{path}: {value!r} does not match {meta['pattern']!r}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not in {shape.enum}")
    return problems


def _validation_errors(service: str, operation: str, params: dict) -> list[str]:
    from botocore.validate import ParamValidator

    shape = _service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    errors = [report.generate_report()] if report.has_errors() else []
    return errors + _literal_problems(params, shape)


def _step_requests(definition: dict) -> list[tuple[str, str, str, dict]]:
    """(step name, service, operation, request) for every step that calls an AWS API."""
    steps = _steps(definition)
    types = {name: step["Type"] for name, step in steps.items()}
    requests = []
    for name, step in steps.items():
        if step["Type"] in _STEP_REQUESTS:
            service, operation, extra = _STEP_REQUESTS[step["Type"]]
            request = {**_resolve(step["Arguments"], definition, types), **extra}
            requests.append((name, service, operation, request))
        elif step["Type"] == "Lambda":
            payload = _resolve(step["Arguments"], definition, types)
            request = {"FunctionName": step["FunctionArn"], "Payload": json.dumps(payload).encode()}
            requests.append((name, "lambda", "Invoke", request))
    return requests


def test_every_step_request_validates_against_botocore_shapes(definition):
    requests = _step_requests(definition)
    assert {(n, op) for n, _, op, _ in requests} == {
        ("AggregateFeatures", "CreateProcessingJob"),
        ("TrainModel", "CreateTrainingJob"),
        ("EvaluateModel", "CreateProcessingJob"),
        ("RegisterModel", "CreateModelPackage"),
        ("DeployModel", "Invoke"),
    }
    for name, service, operation, request in requests:
        errors = _validation_errors(service, operation, request)
        assert errors == [], f"{name} ({operation}): {errors}"


def test_shape_validation_catches_wrong_types_and_missing_members(definition):
    """The check above can fail: typed placeholders make an Integer parameter in a string list an error."""
    requests = {n: r for n, _, _, r in _step_requests(definition)}
    aggregate = json.loads(json.dumps(requests["AggregateFeatures"]))
    aggregate["AppSpecification"]["ContainerArguments"].append(7)  # what a bare ParameterInteger gives
    assert _validation_errors("sagemaker", "CreateProcessingJob", aggregate)
    train = json.loads(json.dumps(requests["TrainModel"]))
    del train["AlgorithmSpecification"]["TrainingInputMode"]
    assert any("TrainingInputMode" in e for e in _validation_errors("sagemaker", "CreateTrainingJob", train))
    register = dict(requests["RegisterModel"], ModelApprovalStatus=_Literal("Aproved"))
    assert any("Aproved" in e for e in _validation_errors("sagemaker", "CreateModelPackage", register))
    aggregate = dict(requests["AggregateFeatures"], RoleArn=_Literal("my-role"))  # literal: pattern checked
    assert any("RoleArn" in e for e in _validation_errors("sagemaker", "CreateProcessingJob", aggregate))
    with pytest.raises(AssertionError, match="no member"):
        _property_type("Training", "ModelArtifacts.S3ModelArtifact")


def test_lambda_step_payload_is_what_deploy_model_accepts(definition):
    from lambdas.deploy_model.handler import DeployConfig, parse_event

    ((_, _, _, request),) = [r for r in _step_requests(definition) if r[0] == "DeployModel"]
    config = DeployConfig(endpoint_name="env-endpoint", model_package_group_name="g", execution_role_arn=ROLE)
    parsed = parse_event(json.loads(request["Payload"]), config)
    assert parsed.source == "pipeline" and parsed.endpoint_name == "placeholder"


def test_quality_gate_paths_resolve_in_a_real_evaluation_json(definition):
    """Both JsonGet paths of the gate point at numbers in what processing/evaluate.py writes."""
    import numpy as np

    from processing.evaluate import compute_metrics

    document = {
        "binary_classification_metrics": compute_metrics(np.array([0, 0, 1, 1]), [0.1, 0.7, 0.4, 0.9])
    }
    step = _steps(definition)["CheckPrAuc"]["Arguments"]
    paths = {c["LeftValue"]["Std:JsonGet"]["Path"]: c for c in step["Conditions"]}
    assert set(paths) == {d.PR_AUC_JSON_PATH, d.RECALL_JSON_PATH}
    for path in paths:
        value = document
        for key in path.split("."):
            value = value[key]
        assert isinstance(value, float), (path, value)
    assert (
        paths[d.RECALL_JSON_PATH]["Type"] == "GreaterThan" and paths[d.RECALL_JSON_PATH]["RightValue"] == 0.0
    )
    assert paths[d.PR_AUC_JSON_PATH]["Type"] == "GreaterThanOrEqualTo"
    assert paths[d.PR_AUC_JSON_PATH]["RightValue"] == _get("MinPrAuc")
