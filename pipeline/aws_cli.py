"""`run_pipeline.py` subcommands for AWS: definition, upsert, start, status, approve.

    python run_pipeline.py definition [--region R --role-arn ARN --bucket B]     # offline JSON
    python run_pipeline.py upsert --stack fraud-detection-pipeline [--region R]  # names from the stack outputs
    python run_pipeline.py upsert --role-arn ARN --bucket B --deploy-lambda ARN  # or each name explicitly
    python run_pipeline.py start [--param MinPrAuc=0.8 ...] [--wait]            # exit 0 iff Succeeded
    python run_pipeline.py status [--execution-arn ARN]                          # latest execution by default
    python run_pipeline.py approve --model-package-arn ARN [--status Approved|Rejected]
    python run_pipeline.py approve --latest [--model-package-group G]           # newest version of the group
    python run_pipeline.py approve --work-dir DIR --version N [--status ...]     # local registry

Every AWS-facing function takes its boto3 client as an argument (tests pass moto or Stubber
clients); `_session()` is the one place clients come from. User errors (missing credentials,
role or bucket, unknown parameter) end with a one-line message on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from features import spec
from pipeline.parameters import DEFAULT_PREFIX, PARAMETER_NAMES
from shared.errors import RunFailed

TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")


class CliError(RunFailed):
    """A user-facing failure: printed as one line by run_pipeline.py, exit status 1 (or `code`)."""


# --------------------------------------------------------------------------- AWS plumbing
def _session(region: str | None) -> Any:
    import boto3

    session = boto3.Session(region_name=region) if region else boto3.Session()
    if not session.region_name:
        raise CliError("no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION")
    return session


def _aws_error(exc: Exception, action: str) -> CliError:
    """Translate botocore failures into one actionable line."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        TokenRetrievalError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CliError(
            f"{action}: no AWS credentials found; configure them (aws configure / aws sso login, "
            "AWS_PROFILE, or AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, TokenRetrievalError):
        return CliError(f"{action}: AWS SSO session expired; run `aws sso login`")
    if isinstance(exc, ProfileNotFound):
        return CliError(f"{action}: {exc}")
    if isinstance(exc, NoRegionError):
        return CliError(f"{action}: no AWS region; pass --region or set AWS_REGION")
    if isinstance(exc, EndpointConnectionError):
        return CliError(f"{action}: cannot reach AWS ({exc})")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return CliError(f"{action}: {error.get('Code', 'Error')}: {error.get('Message', exc)}")
    return CliError(f"{action}: {exc}")


def _guard(action: str, fn: Callable[[], int]) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except (BotoCoreError, ClientError) as exc:
        raise _aws_error(exc, action) from exc


# --------------------------------------------------------------------------- upsert
def upload_code_bundle(s3: Any, bucket: str, code_prefix: str, files: dict[str, bytes], out: TextIO) -> int:
    """Upload the bundle the definition names; keys are content-addressed, so existing ones are skipped."""
    from botocore.exceptions import ClientError

    uploaded = 0
    for relative, body in sorted(files.items()):
        key = f"{code_prefix}/{relative}"
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            if head.get("ContentLength") == len(body):
                continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        uploaded += 1
    print(f"code: {uploaded} of {len(files)} files uploaded to s3://{bucket}/{code_prefix}/", file=out)
    return uploaded


def upsert_pipeline(
    sm: Any, *, name: str, definition: str, role_arn: str, description: str
) -> tuple[str, str]:
    """CreatePipeline, or UpdatePipeline when it exists; returns (arn, "created"|"updated")."""
    from botocore.exceptions import ClientError

    try:
        sm.describe_pipeline(PipelineName=name)
        exists = True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("ResourceNotFound", "ValidationException"):
            raise
        exists = False
    common = {
        "PipelineName": name,
        "PipelineDisplayName": name,
        "PipelineDefinition": definition,
        "PipelineDescription": description,
        "RoleArn": role_arn,
    }
    if exists:
        return sm.update_pipeline(**common)["PipelineArn"], "updated"
    return sm.create_pipeline(**common, Tags=[{"Key": "project", "Value": DEFAULT_PREFIX}])[
        "PipelineArn"
    ], "created"


STACK_OUTPUTS = {
    "role_arn": "SageMakerExecutionRoleArn",
    "deploy_lambda": "DeployModelFunctionArn",
    "bucket": "ArtifactBucket",
}
"""upsert option -> output of the pipeline stack (infra/pipeline.yaml) that supplies it with --stack."""


def stack_outputs(cfn: Any, stack_name: str) -> dict[str, str]:
    """OutputKey -> OutputValue of a deployed CloudFormation stack."""
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
            raise CliError(
                f"stack {stack_name!r} not found in this region: deploy it first (make deploy) or pass "
                "--role-arn, --bucket and --deploy-lambda"
            ) from exc
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def names_from_stack(args: argparse.Namespace, outputs: dict[str, str]) -> None:
    """Fill --role-arn, --deploy-lambda and --bucket that were not given from the stack's outputs."""
    for attribute, output in STACK_OUTPUTS.items():
        if not getattr(args, attribute) and outputs.get(output):
            setattr(args, attribute, outputs[output])


def _config_from_args(args: argparse.Namespace) -> Any:
    """The definition's names; a bad one (DefinitionError, a UserError) exits 2 with one line."""
    from pipeline.definition import make_config

    return make_config(
        args.region,
        args.role_arn,
        args.bucket,
        pipeline_name=args.pipeline_name,
        model_package_group_name=args.model_package_group,
        deploy_lambda=args.deploy_lambda,
        feature_group_name=args.feature_group,
        prefix=args.prefix,
    )


def cmd_definition(args: argparse.Namespace) -> int:
    from pipeline.definition import pipeline_definition

    text = pipeline_definition(_config_from_args(args))
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _require_upsert_names(args: argparse.Namespace) -> None:
    hint = "or pass --stack <pipeline stack name> to read it from the stack's outputs"
    if not args.role_arn:
        raise CliError(
            "upsert needs --role-arn: the SageMaker execution role (output SageMakerExecutionRoleArn of the "
            f"pipeline stack, infra/pipeline.yaml), {hint}",
            code=2,
        )
    if not args.bucket:
        raise CliError(
            f"upsert needs --bucket: the artifact bucket the pipeline stack was deployed with, {hint}", code=2
        )
    if not args.deploy_lambda:
        # Its name follows the stack's NamePrefix: a default would silently point another prefix's
        # pipeline at the wrong function.
        raise CliError(
            "upsert needs --deploy-lambda: the deploy_model function (output DeployModelFunctionArn of the "
            f"pipeline stack), {hint}",
            code=2,
        )


def cmd_upsert(args: argparse.Namespace) -> int:
    if not args.stack:
        _require_upsert_names(args)
    from pipeline.definition import build_code_bundle, pipeline_definition

    bundle = build_code_bundle()

    def run() -> int:
        from botocore.exceptions import ClientError

        session = _session(args.region)
        session.client("sts").get_caller_identity()  # fail fast, with one line, on missing credentials
        if args.stack:
            names_from_stack(args, stack_outputs(session.client("cloudformation"), args.stack))
            _require_upsert_names(args)
        config = dataclasses.replace(
            _config_from_args(args), region=session.region_name, code_version=bundle.version
        )
        s3 = session.client("s3")
        try:
            s3.head_bucket(Bucket=config.bucket)
        except ClientError as exc:
            raise CliError(
                f"upsert: bucket {config.bucket!r} is missing or not accessible "
                f"({exc.response.get('Error', {}).get('Code')}); pass the pipeline stack's ArtifactBucket"
            ) from exc
        definition = pipeline_definition(config)
        code_prefix = f"{config.prefix}/code/{bundle.version}"
        upload_code_bundle(s3, config.bucket, code_prefix, bundle.files, sys.stderr)
        arn, action = upsert_pipeline(
            session.client("sagemaker"),
            name=config.pipeline_name,
            definition=definition,
            role_arn=config.role_arn,
            description="Card-fraud detection: Spark features -> XGBoost -> evaluation gate -> register -> deploy",
        )
        print(f"pipeline {action}: {arn}")
        return 0

    return _guard("upsert", run)


# --------------------------------------------------------------------------- start / wait / status
def parse_params(pairs: Sequence[str]) -> list[dict[str, str]]:
    """`Name=Value` strings -> PipelineParameters; names must be the pipeline's parameters."""
    parameters: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--param expects Name=Value, got {pair!r}", code=2)
        if name not in PARAMETER_NAMES:
            raise CliError(
                f"unknown pipeline parameter {name!r} (known: {', '.join(PARAMETER_NAMES)})", code=2
            )
        parameters[name] = value
    return [{"Name": n, "Value": v} for n, v in parameters.items()]


def start_execution(
    sm: Any, pipeline_name: str, parameters: list[dict[str, str]], display_name: str | None = None
) -> str:
    kwargs: dict[str, Any] = {"PipelineName": pipeline_name, "PipelineParameters": parameters}
    if display_name:
        kwargs["PipelineExecutionDisplayName"] = display_name
    return sm.start_pipeline_execution(**kwargs)["PipelineExecutionArn"]


def list_steps(sm: Any, execution_arn: str) -> list[dict[str, Any]]:
    """All steps of an execution, oldest first."""
    steps: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_pipeline_execution_steps(**kwargs)
        steps.extend(page.get("PipelineExecutionSteps", []))
        token = page.get("NextToken")
        if not token:
            return steps


def _step_line(step: dict[str, Any]) -> str:
    name = step.get("StepDisplayName") or step["StepName"]
    line = (
        f"{step['StepName']} ({name}): {step.get('StepStatus', '?')}"
        if name != step["StepName"]
        else (f"{step['StepName']}: {step.get('StepStatus', '?')}")
    )
    if step.get("CacheHitResult"):
        line += " (cache hit)"
    if step.get("FailureReason"):
        line += f" - {step['FailureReason']}"
    return line


def wait_for_execution(
    sm: Any,
    execution_arn: str,
    *,
    poll_seconds: float = 30.0,
    timeout_seconds: float | None = None,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Print each step's status when it changes; return the execution's terminal status."""
    seen: dict[str, str] = {}
    started = clock()
    while True:
        for step in list_steps(sm, execution_arn):
            status = step.get("StepStatus", "?")
            if seen.get(step["StepName"]) != status:
                seen[step["StepName"]] = status
                print(f"{datetime.now(UTC):%H:%M:%S} {_step_line(step)}", file=out, flush=True)
        execution = sm.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        status = execution["PipelineExecutionStatus"]
        if status in TERMINAL_STATUSES:
            reason = execution.get("FailureReason")
            line = f"execution {status}" + (f": {reason}" if reason else "")
            print(f"{datetime.now(UTC):%H:%M:%S} {line}", file=out, flush=True)
            return status
        if timeout_seconds is not None and clock() - started >= timeout_seconds:
            raise CliError(
                f"gave up waiting after {timeout_seconds:.0f} s; execution is {status}: {execution_arn}"
            )
        sleep(poll_seconds)


def latest_execution_arn(sm: Any, pipeline_name: str) -> str:
    page = sm.list_pipeline_executions(
        PipelineName=pipeline_name, SortBy="CreationTime", SortOrder="Descending"
    )
    summaries = page.get("PipelineExecutionSummaries", [])
    if not summaries:
        raise CliError(f"pipeline {pipeline_name} has no executions yet (run `run_pipeline.py start`)")
    return max(summaries, key=lambda s: s.get("StartTime") or datetime.min.replace(tzinfo=UTC))[
        "PipelineExecutionArn"
    ]


def execution_status(sm: Any, execution_arn: str, out: TextIO = sys.stdout) -> str:
    """Print the execution and its steps; return its status."""
    execution = sm.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    status = execution["PipelineExecutionStatus"]
    print(f"execution: {execution_arn}", file=out)
    print(
        f"status:    {status}"
        + (f" ({execution['FailureReason']})" if execution.get("FailureReason") else ""),
        file=out,
    )
    for step in list_steps(sm, execution_arn):
        print(f"  {_step_line(step)}", file=out)
    return status


def _exit_for(status: str) -> int:
    return 0 if status == "Succeeded" else 1


def cmd_start(args: argparse.Namespace) -> int:
    parameters = parse_params(args.param or [])

    def run() -> int:
        sm = _session(args.region).client("sagemaker")
        arn = start_execution(sm, args.pipeline_name, parameters, args.display_name)
        print(arn)
        if not args.wait:
            return 0
        status = wait_for_execution(sm, arn, poll_seconds=args.poll_seconds, timeout_seconds=args.timeout)
        return _exit_for(status)

    return _guard("start", run)


def cmd_status(args: argparse.Namespace) -> int:
    def run() -> int:
        sm = _session(args.region).client("sagemaker")
        arn = args.execution_arn or latest_execution_arn(sm, args.pipeline_name)
        status = execution_status(sm, arn)
        return 0 if status in ("Succeeded", "Executing", "Stopping") else 1

    return _guard("status", run)


# --------------------------------------------------------------------------- approve
def approve_package(
    sm: Any, model_package_arn: str, status: str, description: str | None = None
) -> dict[str, Any]:
    """UpdateModelPackage; an Approved version then reaches deploy_model through EventBridge."""
    kwargs: dict[str, Any] = {"ModelPackageArn": model_package_arn, "ModelApprovalStatus": status}
    if description:
        kwargs["ApprovalDescription"] = description
    sm.update_model_package(**kwargs)
    return sm.describe_model_package(ModelPackageName=model_package_arn)


def latest_package_arn(sm: Any, group: str) -> str:
    """ARN of the newest version of a model package group."""
    page = sm.list_model_packages(
        ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending", MaxResults=1
    )
    summaries = page.get("ModelPackageSummaryList", [])
    if not summaries:
        raise CliError(f"model package group {group} has no versions yet (run the pipeline first)")
    return summaries[0]["ModelPackageArn"]


def cmd_approve(args: argparse.Namespace) -> int:
    if args.work_dir:
        from pipeline.local_runner import approve_local

        return int(approve_local(args) or 0)
    if not args.model_package_arn and not args.latest:
        raise CliError(
            "approve needs --model-package-arn ARN or --latest (AWS), or --work-dir DIR --version N (local)",
            code=2,
        )

    def run() -> int:
        sm = _session(args.region).client("sagemaker")
        arn = args.model_package_arn or latest_package_arn(sm, args.model_package_group)
        package = approve_package(sm, arn, args.status or "Approved", args.description)
        print(
            f"{package.get('ModelPackageGroupName', '?')} version {package.get('ModelPackageVersion', '?')}: "
            f"{package.get('ModelApprovalStatus')}"
        )
        return 0

    return _guard("approve", run)


# --------------------------------------------------------------------------- argparse
def _add_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / profile)")


def _add_names(parser: argparse.ArgumentParser, *, role_required_hint: str) -> None:
    _add_region(parser)
    parser.add_argument("--role-arn", help=role_required_hint)
    parser.add_argument(
        "--bucket", help="artifact bucket (default for `definition`: sagemaker-<region>-<account>)"
    )
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="key prefix in the bucket (default %(default)s)"
    )
    parser.add_argument("--pipeline-name", default=spec.PIPELINE_NAME, help="default %(default)s")
    parser.add_argument("--model-package-group", default=spec.MODEL_PACKAGE_GROUP, help="default %(default)s")
    parser.add_argument(
        "--deploy-lambda",
        default=None,
        help="deploy_model function name or ARN: output DeployModelFunctionArn of the pipeline stack "
        "(required by upsert unless --stack; `definition` prints a placeholder without it)",
    )
    parser.add_argument("--feature-group", default=spec.BATCH_FEATURE_GROUP.name, help="default %(default)s")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register definition, upsert, start, status and approve on run_pipeline.py's subparsers."""
    p = commands.add_parser("definition", help="print the SageMaker pipeline definition JSON (offline)")
    _add_names(p, role_required_hint="execution role ARN (default: a placeholder in account 111122223333)")
    p.add_argument("--output", "-o", help="write the JSON here instead of stdout")
    p.set_defaults(handler=cmd_definition)

    p = commands.add_parser("upsert", help="upload the step code and create or update the pipeline")
    _add_names(
        p, role_required_hint="SageMaker execution role ARN (pipeline stack output SageMakerExecutionRoleArn)"
    )
    p.add_argument(
        "--stack",
        help="pipeline stack (infra/pipeline.yaml, e.g. fraud-detection-pipeline): role, bucket and deploy "
        "function default to its outputs " + ", ".join(STACK_OUTPUTS.values()),
    )
    p.set_defaults(handler=cmd_upsert)

    p = commands.add_parser("start", help="start a pipeline execution")
    _add_region(p)
    p.add_argument("--pipeline-name", default=spec.PIPELINE_NAME, help="default %(default)s")
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help=f"override a parameter ({', '.join(PARAMETER_NAMES)})",
    )
    p.add_argument("--display-name", help="execution display name")
    p.add_argument(
        "--wait", action="store_true", help="follow the steps until the end; exit 0 iff it succeeds"
    )
    p.add_argument(
        "--poll-seconds", type=float, default=30.0, help="polling interval with --wait (default 30)"
    )
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    p.set_defaults(handler=cmd_start)

    p = commands.add_parser("status", help="show an execution and its steps (latest by default)")
    _add_region(p)
    p.add_argument("--pipeline-name", default=spec.PIPELINE_NAME, help="default %(default)s")
    p.add_argument("--execution-arn", help="execution to show (default: the latest)")
    p.set_defaults(handler=cmd_status)

    p = commands.add_parser("approve", help="set a model package's approval status (AWS or --work-dir local)")
    _add_region(p)
    p.add_argument("--model-package-arn", help="AWS model package version ARN")
    p.add_argument("--latest", action="store_true", help="AWS: the newest version of --model-package-group")
    p.add_argument("--model-package-group", default=spec.MODEL_PACKAGE_GROUP, help="default %(default)s")
    p.add_argument("--status", choices=APPROVAL_STATUSES, default="Approved", help="default %(default)s")
    p.add_argument("--description", help="approval description (AWS)")
    p.add_argument("--work-dir", help="local mode: work dir of a `local` run")
    p.add_argument("--version", type=int, help="local mode: model version number")
    p.set_defaults(handler=cmd_approve)
