"""run_pipeline.py AWS subcommands against moto (pipelines, S3, registry) and Stubber (execution steps)."""

from __future__ import annotations

import argparse
import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from pipeline import aws_cli
from shared.cli import run

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/fraud-detection-sagemaker-execution"
BUCKET = "fraud-artifacts"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    aws_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def _run(*argv: str) -> int:
    args = _parse(*argv)
    return run(lambda: args.handler(args))  # as run_pipeline.py's entry: user errors caught once


@pytest.fixture
def aws():
    with mock_aws():
        yield boto3.Session(region_name=REGION)


class _WithSteps:
    """A moto client plus the one pipeline call moto lacks (ListPipelineExecutionSteps)."""

    def __init__(self, client, steps):
        self._client, self._steps = client, steps

    def __getattr__(self, name):
        return getattr(self._client, name)

    def list_pipeline_execution_steps(self, **kwargs):
        return {"PipelineExecutionSteps": self._steps}


def _create_pipeline(sm, name: str = "fraud-detection-pipeline") -> None:
    sm.create_pipeline(PipelineName=name, PipelineDefinition="{}", RoleArn=ROLE)


def test_parse_params_validates_names_and_format():
    assert aws_cli.parse_params(["MinPrAuc=0.8", "SnapshotDate=", "MinPrAuc=0.9"]) == [
        {"Name": "MinPrAuc", "Value": "0.9"},
        {"Name": "SnapshotDate", "Value": ""},
    ]
    with pytest.raises(aws_cli.CliError, match="unknown pipeline parameter 'MinPRAUC'"):
        aws_cli.parse_params(["MinPRAUC=1"])
    with pytest.raises(aws_cli.CliError, match="Name=Value"):
        aws_cli.parse_params(["MinPrAuc"])


def test_start_passes_parameters_and_prints_the_execution(aws, capsys):
    sm = aws.client("sagemaker")
    _create_pipeline(sm)
    code = _run("start", "--region", REGION, "--param", "MinPrAuc=0.8", "--param", "SnapshotDate=2020-05-31")
    assert code == 0
    arn = capsys.readouterr().out.strip()
    assert ":pipeline/fraud-detection-pipeline/execution/" in arn
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert params == [{"Name": "MinPrAuc", "Value": "0.8"}, {"Name": "SnapshotDate", "Value": "2020-05-31"}]


def test_start_unknown_pipeline_is_one_line_error(aws, capsys):
    assert _run("start", "--region", REGION, "--pipeline-name", "missing") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: start:") and "\n" not in err


def test_status_of_latest_execution_lists_steps(aws):
    sm = aws.client("sagemaker")
    _create_pipeline(sm)
    first = aws_cli.start_execution(sm, "fraud-detection-pipeline", [])
    latest = aws_cli.start_execution(sm, "fraud-detection-pipeline", [])
    assert aws_cli.latest_execution_arn(sm, "fraud-detection-pipeline") in (first, latest)
    steps = [
        {
            "StepName": "AggregateFeatures",
            "StepDisplayName": "Aggregate features (Spark)",
            "StepStatus": "Succeeded",
        },
        {
            "StepName": "TrainModel",
            "StepStatus": "Succeeded",
            "CacheHitResult": {"SourcePipelineExecutionArn": "x"},
        },
    ]
    out = io.StringIO()
    status = aws_cli.execution_status(_WithSteps(sm, steps), latest, out)
    text = out.getvalue()
    assert status == "Succeeded"
    assert f"execution: {latest}" in text
    assert "AggregateFeatures (Aggregate features (Spark)): Succeeded" in text
    assert "TrainModel: Succeeded (cache hit)" in text


def test_status_without_executions_is_a_clear_error(aws):
    sm = aws.client("sagemaker")
    _create_pipeline(sm)
    with pytest.raises(aws_cli.CliError, match="no executions yet"):
        aws_cli.latest_execution_arn(sm, "fraud-detection-pipeline")


def _execution(status: str, reason: str | None = None) -> dict:
    response = {
        "PipelineExecutionArn": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/e1",
        "PipelineExecutionStatus": status,
    }
    if reason:
        response["FailureReason"] = reason
    return response


def _step(name: str, status: str, **extra) -> dict:
    return {"StepName": name, "StepStatus": status, **extra}


def test_wait_prints_each_change_once_and_returns_the_final_status():
    arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/e1"
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(client)
    polls = [
        ([_step("AggregateFeatures", "Executing")], "Executing"),
        ([_step("AggregateFeatures", "Executing")], "Executing"),  # no change: nothing printed
        ([_step("AggregateFeatures", "Succeeded"), _step("TrainModel", "Executing")], "Executing"),
        (
            [
                _step("AggregateFeatures", "Succeeded"),
                _step("TrainModel", "Succeeded"),
                _step("EvaluateModel", "Succeeded"),
                _step("CheckPrAuc", "Succeeded"),
                _step(
                    "PrAucBelowThreshold", "Failed", FailureReason="Test pr_auc 0.61 is below MinPrAuc 0.75"
                ),
            ],
            "Failed",
        ),
    ]
    for steps, status in polls:
        stub.add_response(
            "list_pipeline_execution_steps",
            {"PipelineExecutionSteps": steps},
            {"PipelineExecutionArn": arn, "SortOrder": "Ascending"},
        )
        reason = "Step failure: PrAucBelowThreshold" if status == "Failed" else None
        stub.add_response(
            "describe_pipeline_execution", _execution(status, reason), {"PipelineExecutionArn": arn}
        )
    sleeps: list[float] = []
    out = io.StringIO()
    with stub:
        status = aws_cli.wait_for_execution(client, arn, poll_seconds=7, out=out, sleep=sleeps.append)
    stub.assert_no_pending_responses()
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert status == "Failed" and sleeps == [7, 7, 7]
    assert lines == [
        "AggregateFeatures: Executing",
        "AggregateFeatures: Succeeded",
        "TrainModel: Executing",
        "TrainModel: Succeeded",
        "EvaluateModel: Succeeded",
        "CheckPrAuc: Succeeded",
        "PrAucBelowThreshold: Failed - Test pr_auc 0.61 is below MinPrAuc 0.75",
        "execution Failed: Step failure: PrAucBelowThreshold",
    ]
    assert aws_cli._exit_for(status) == 1 and aws_cli._exit_for("Succeeded") == 0


def test_wait_gives_up_after_timeout():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    stub = Stubber(client)
    stub.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": []})
    stub.add_response("describe_pipeline_execution", _execution("Executing"))
    ticks = iter([0.0, 100.0])
    with stub, pytest.raises(aws_cli.CliError, match="gave up waiting after 60 s"):
        aws_cli.wait_for_execution(
            client,
            "arn:x",
            timeout_seconds=60,
            out=io.StringIO(),
            sleep=lambda s: None,
            clock=lambda: next(ticks),
        )


@pytest.mark.xdist_group("sagemaker")  # builds the definition: share the SDK import with its tests
def test_upsert_uploads_code_then_creates_and_updates(aws, capsys, monkeypatch):
    from pipeline import definition

    bundle = definition.build_code_bundle()
    # Pin the bundle: other work in the tree may change the sources while this test runs.
    monkeypatch.setattr(definition, "build_code_bundle", lambda root=None: bundle)
    aws.client("s3").create_bucket(Bucket=BUCKET)
    argv = ("upsert", "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET, "--deploy-lambda", "dm")
    assert _run(*argv) == 0
    captured = capsys.readouterr()
    assert "pipeline created: arn:aws:sagemaker:us-east-1:" in captured.out
    prefix = f"fraud-detection/code/{bundle.version}/"
    keys = {o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert keys == {prefix + name for name in bundle.files}
    stored = json.loads(
        aws.client("sagemaker").describe_pipeline(PipelineName="fraud-detection-pipeline")[
            "PipelineDefinition"
        ]
    )
    uris = json.dumps(stored)
    assert (
        f"s3://{BUCKET}/fraud-detection/code/{bundle.version}/deps.zip" in uris
    )  # definition names uploaded code

    assert _run(*argv) == 0
    captured = capsys.readouterr()
    assert "pipeline updated" in captured.out
    assert (
        f"0 of {len(bundle.files)} files uploaded" in captured.err
    )  # content-addressed: nothing re-uploaded


def test_upsert_requires_role_deploy_function_and_an_existing_bucket(aws, capsys):
    assert _run("upsert", "--region", REGION, "--bucket", BUCKET) == 2
    assert "upsert needs --role-arn" in capsys.readouterr().err
    # No default deploy function: its name follows the stack's NamePrefix.
    assert _run("upsert", "--region", REGION, "--role-arn", ROLE, "--bucket", BUCKET) == 2
    err = capsys.readouterr().err
    assert "upsert needs --deploy-lambda" in err and "DeployModelFunctionArn" in err and "--stack" in err
    argv = (
        "upsert",
        "--region",
        REGION,
        "--role-arn",
        ROLE,
        "--bucket",
        "no-such-bucket",
        "--deploy-lambda",
        "f",
    )
    assert _run(*argv) == 1
    err = capsys.readouterr().err.strip()
    assert "bucket 'no-such-bucket' is missing or not accessible" in err and "\n" not in err


_STACK_OUTPUTS = {
    "SageMakerExecutionRoleArn": "arn:aws:iam::123456789012:role/acme-sagemaker-execution",
    "DeployModelFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:acme-deploy-model",
    "ArtifactBucket": "acme-artifacts",
}


class _StackSession:
    """moto for everything, a Stubber-backed CloudFormation client (moto's needs extra packages)."""

    def __init__(self, session, stacks: dict[str, dict[str, str]]):
        self._session, self.region_name = session, session.region_name
        self._cfn = session.client("cloudformation")
        self.stub = Stubber(self._cfn)
        for name, outputs in stacks.items():
            response = {
                "Stacks": [
                    {
                        "StackName": name,
                        "CreationTime": "2026-01-01T00:00:00Z",
                        "StackStatus": "CREATE_COMPLETE",
                        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
                    }
                ]
            }
            self.stub.add_response("describe_stacks", response, {"StackName": name})
        self.stub.add_client_error(
            "describe_stacks", "ValidationError", "Stack with id nope does not exist", http_status_code=400
        )
        self.stub.activate()

    def client(self, name: str, **kwargs):
        return self._cfn if name == "cloudformation" else self._session.client(name, **kwargs)


@pytest.mark.xdist_group("sagemaker")
def test_upsert_with_a_non_default_stack_takes_the_deploy_function_from_its_outputs(aws, capsys, monkeypatch):
    """NamePrefix acme: the Lambda step must call acme-deploy-model, never fraud-detection-deploy-model."""
    stacked = _StackSession(aws, {"acme-pipeline": _STACK_OUTPUTS})
    monkeypatch.setattr(aws_cli, "_session", lambda region: stacked)
    aws.client("s3").create_bucket(Bucket="acme-artifacts")
    assert _run("upsert", "--region", REGION, "--stack", "acme-pipeline") == 0, capsys.readouterr().err
    stored = json.loads(
        aws.client("sagemaker").describe_pipeline(PipelineName="fraud-detection-pipeline")[
            "PipelineDefinition"
        ]
    )
    (condition,) = [s for s in stored["Steps"] if s["Type"] == "Condition"]
    (deploy,) = [s for s in condition["Arguments"]["IfSteps"] if s["Type"] == "Lambda"]
    assert deploy["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:acme-deploy-model"
    assert "s3://acme-artifacts/fraud-detection/code/" in json.dumps(stored)
    described = aws.client("sagemaker").describe_pipeline(PipelineName="fraud-detection-pipeline")
    assert described["RoleArn"] == "arn:aws:iam::123456789012:role/acme-sagemaker-execution"
    # A missing stack is one line.
    capsys.readouterr()
    assert _run("upsert", "--region", REGION, "--stack", "nope") == 1
    err = capsys.readouterr().err.strip()
    assert "stack 'nope' not found" in err and "\n" not in err
    stacked.stub.assert_no_pending_responses()


def test_missing_credentials_is_a_one_line_error(monkeypatch, tmp_path, capsys, no_network):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert _run("start", "--region", REGION) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no AWS credentials found" in err


def test_approve_on_aws_and_local_delegation(aws, capsys, monkeypatch):
    sm = aws.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="fraud-detection-models")
    arn = sm.create_model_package(
        ModelPackageGroupName="fraud-detection-models",
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelApprovalStatus="PendingManualApproval",
    )["ModelPackageArn"]
    assert _run("approve", "--region", REGION, "--model-package-arn", arn) == 0
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    assert "fraud-detection-models version 1: Approved" in capsys.readouterr().out
    assert _run("approve", "--region", REGION, "--model-package-arn", arn, "--status", "Rejected") == 0
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Rejected"

    import pipeline.local_runner as local_runner

    seen = []
    monkeypatch.setattr(
        local_runner,
        "approve_local",
        lambda args: seen.append((args.work_dir, args.version, args.status)) or 0,
    )
    assert _run("approve", "--work-dir", "work/demo", "--version", "3", "--status", "Rejected") == 0
    assert seen == [("work/demo", 3, "Rejected")]
    assert _run("approve") == 2


def test_approve_latest_picks_the_newest_version(aws, capsys):
    sm = aws.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="fraud-detection-models")
    arns = [
        sm.create_model_package(
            ModelPackageGroupName="fraud-detection-models",
            InferenceSpecification={
                "Containers": [{"Image": "img", "ModelDataUrl": f"s3://b/m{i}.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
            ModelApprovalStatus="PendingManualApproval",
        )["ModelPackageArn"]
        for i in range(2)
    ]
    assert _run("approve", "--region", REGION, "--latest") == 0
    statuses = [sm.describe_model_package(ModelPackageName=a)["ModelApprovalStatus"] for a in arns]
    assert statuses == ["PendingManualApproval", "Approved"]
    assert "version 2: Approved" in capsys.readouterr().out
    assert _run("approve", "--region", REGION, "--latest", "--model-package-group", "empty") == 1
