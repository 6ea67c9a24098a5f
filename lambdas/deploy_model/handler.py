"""Deploy an approved model package to the real-time endpoint (blue/green, idempotent).

Two triggers, one code path:
- the pipeline's Lambda step: `{"model_package_arn": ARN, "endpoint_name": NAME}`;
- EventBridge "SageMaker Model Package State Change" for a version approved later by hand
  (`detail.ModelPackageArn`, `detail.ModelApprovalStatus`), endpoint from ENDPOINT_NAME.

Only `Approved` packages are deployed; anything else returns `status: "skipped"` with the
reason (the pipeline registers `PendingManualApproval` by default, so the Lambda step is a
no-op until someone approves). Names derive from the package version, so a second call with
the same package finds the model, the endpoint config and the endpoint already in place and
returns `status: "unchanged"`. An existing endpoint is updated in place with a blue/green
deployment that rolls back on the configured CloudWatch alarms.

Result (all values strings, as the pipeline's LambdaOutput expects):
`{"status": created|updated|unchanged|in_progress|skipped, "reason", "model_package_arn",
"model_package_version", "approval_status", "endpoint_name", "endpoint_config_name", "model_name"}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

MODEL_PACKAGE_STATE_CHANGE = "SageMaker Model Package State Change"
VARIANT_NAME = "AllTraffic"
BUSY_STATUSES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


class DeployError(RuntimeError):
    """The deployment cannot proceed now (endpoint busy or failed, bad event): the invocation fails."""


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class DeployConfig:
    """Environment of the function (names fixed in common.md; infra/pipeline.yaml sets them)."""

    endpoint_name: str
    model_package_group_name: str
    execution_role_arn: str
    instance_type: str = "ml.m5.large"
    initial_instance_count: int = 1
    rollback_alarm_names: tuple[str, ...] = ()
    metrics_namespace: str = "FraudDetection"
    traffic_wait_seconds: int = 300
    termination_wait_seconds: int = 300


def config_from_env(env: Mapping[str, str] = os.environ) -> DeployConfig:
    """All environment variables are read here and nowhere else."""
    missing = [
        k for k in ("ENDPOINT_NAME", "MODEL_PACKAGE_GROUP_NAME", "EXECUTION_ROLE_ARN") if not env.get(k)
    ]
    if missing:
        raise DeployError(f"missing environment variables: {', '.join(missing)}")
    alarms = tuple(a.strip() for a in env.get("ROLLBACK_ALARM_NAMES", "").split(",") if a.strip())
    return DeployConfig(
        endpoint_name=env["ENDPOINT_NAME"],
        model_package_group_name=env["MODEL_PACKAGE_GROUP_NAME"],
        execution_role_arn=env["EXECUTION_ROLE_ARN"],
        instance_type=env.get("INSTANCE_TYPE") or "ml.m5.large",
        initial_instance_count=int(env.get("INITIAL_INSTANCE_COUNT") or 1),
        rollback_alarm_names=alarms,
        metrics_namespace=env.get("METRICS_NAMESPACE") or "FraudDetection",
    )


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class DeployRequest:
    model_package_arn: str
    endpoint_name: str
    source: str  # "pipeline" | "eventbridge"


def parse_event(event: Mapping[str, Any], config: DeployConfig) -> DeployRequest:
    """Lambda-step input or the EventBridge model-package state change, else DeployError."""
    if not isinstance(event, Mapping):
        raise DeployError(f"event must be a JSON object, got {type(event).__name__}")
    if event.get("detail-type") == MODEL_PACKAGE_STATE_CHANGE:
        detail = event.get("detail") or {}
        arn = detail.get("ModelPackageArn")
        if not arn:
            raise DeployError("model package state change event without detail.ModelPackageArn")
        return DeployRequest(str(arn), config.endpoint_name, "eventbridge")
    arn = event.get("model_package_arn")
    if not arn:
        raise DeployError(
            "event needs model_package_arn (Lambda step) or an EventBridge model package state change"
        )
    return DeployRequest(str(arn), str(event.get("endpoint_name") or config.endpoint_name), "pipeline")


# --------------------------------------------------------------------------- names
_NAME_OK = re.compile(r"[^a-zA-Z0-9-]+")


def _resource_name(*parts: str, limit: int = 63) -> str:
    """A SageMaker resource name (<= 63 chars, [a-zA-Z0-9-]); long names keep a hash suffix."""
    name = _NAME_OK.sub("-", "-".join(parts)).strip("-")
    name = re.sub("-{2,}", "-", name)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def model_name_for(group: str, version: int | str) -> str:
    return _resource_name(group, f"v{version}")


def endpoint_config_name_for(endpoint: str, version: int | str, config: DeployConfig, model_name: str) -> str:
    """Version + a hash of the serving settings: same package and settings -> same config."""
    settings = f"{model_name}|{config.instance_type}|{config.initial_instance_count}"
    return _resource_name(endpoint, f"v{version}", hashlib.sha256(settings.encode()).hexdigest()[:6])


# --------------------------------------------------------------------------- deployment
def _not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return (
        error.get("Code") in ("ValidationException", "ResourceNotFound")
        and "could not find" in str(error.get("Message", "")).lower()
    )


def _describe(call: Any, **kwargs: Any) -> dict[str, Any] | None:
    try:
        return call(**kwargs)
    except ClientError as exc:
        if _not_found(exc):
            return None
        raise


def _create(call: Any, **kwargs: Any) -> bool:
    """Create; False when a concurrent invocation created it first (pipeline step and approval event)."""
    try:
        call(**kwargs)
        return True
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if (
            error.get("Code") == "ValidationException"
            and "already exist" in str(error.get("Message", "")).lower()
        ):
            return False
        raise


def deployment_config(config: DeployConfig) -> dict[str, Any]:
    """Blue/green, all at once after a baking period, rolled back when an alarm fires."""
    deployment: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "ALL_AT_ONCE",
                "WaitIntervalInSeconds": config.traffic_wait_seconds,
            },
            "TerminationWaitInSeconds": config.termination_wait_seconds,
            "MaximumExecutionTimeoutInSeconds": 3600,
        }
    }
    if config.rollback_alarm_names:
        deployment["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": a} for a in config.rollback_alarm_names]
        }
    return deployment


def deploy(request: DeployRequest, *, sagemaker: Any, config: DeployConfig) -> dict[str, str]:
    """Create or update the endpoint for an Approved package; no-op for anything else or when current."""
    package = sagemaker.describe_model_package(ModelPackageName=request.model_package_arn)
    status = package.get("ModelApprovalStatus", "")
    version = str(package.get("ModelPackageVersion", ""))
    group = package.get("ModelPackageGroupName", "")
    result = {
        "status": "skipped",
        "reason": "",
        "model_package_arn": request.model_package_arn,
        "model_package_version": version,
        "approval_status": status,
        "endpoint_name": request.endpoint_name,
        "endpoint_config_name": "",
        "model_name": "",
    }
    if status != "Approved":
        result["reason"] = (
            f"model package version {version} is {status or 'unknown'}; only Approved versions are deployed"
        )
        return result
    if group != config.model_package_group_name:
        result["reason"] = (
            f"model package belongs to group {group!r}, not {config.model_package_group_name!r}"
        )
        return result

    model_name = model_name_for(group, version)
    config_name = endpoint_config_name_for(request.endpoint_name, version, config, model_name)
    result.update(model_name=model_name, endpoint_config_name=config_name)
    tags = [
        {"Key": "ModelPackageArn", "Value": request.model_package_arn},
        {"Key": "ModelPackageGroupName", "Value": group},
    ]

    if _describe(sagemaker.describe_model, ModelName=model_name) is None:
        _create(
            sagemaker.create_model,
            ModelName=model_name,
            ExecutionRoleArn=config.execution_role_arn,
            Containers=[{"ModelPackageName": request.model_package_arn}],
            Tags=tags,
        )
    if _describe(sagemaker.describe_endpoint_config, EndpointConfigName=config_name) is None:
        _create(
            sagemaker.create_endpoint_config,
            EndpointConfigName=config_name,
            ProductionVariants=[
                {
                    "VariantName": VARIANT_NAME,
                    "ModelName": model_name,
                    "InstanceType": config.instance_type,
                    "InitialInstanceCount": config.initial_instance_count,
                    "InitialVariantWeight": 1.0,
                }
            ],
            Tags=tags,
        )

    endpoint = _describe(sagemaker.describe_endpoint, EndpointName=request.endpoint_name)
    if endpoint is None:
        if _create(
            sagemaker.create_endpoint,
            EndpointName=request.endpoint_name,
            EndpointConfigName=config_name,
            Tags=tags,
        ):
            result.update(status="created", reason=f"endpoint created with version {version}")
        else:
            result.update(status="in_progress", reason="endpoint is being created by a concurrent deployment")
        return result

    if _settled(endpoint, config_name, version, request.endpoint_name, result):
        return result
    try:
        sagemaker.update_endpoint(
            EndpointName=request.endpoint_name,
            EndpointConfigName=config_name,
            RetainAllVariantProperties=False,
            DeploymentConfig=deployment_config(config),
        )
    except ClientError as exc:
        # Another invocation (the pipeline step and the approval event run concurrently) started an
        # update between our describe and this call: the service refuses a second one. Read the
        # endpoint again; the same version in flight is success, another one is "busy, retry".
        if exc.response.get("Error", {}).get("Code") != "ValidationException":
            raise
        endpoint = _describe(sagemaker.describe_endpoint, EndpointName=request.endpoint_name)
        if endpoint is None or not _settled(endpoint, config_name, version, request.endpoint_name, result):
            raise
        return result
    result.update(
        status="updated",
        reason=f"blue/green update from {endpoint.get('EndpointConfigName')} to version {version}",
    )
    return result


def _settled(
    endpoint: Mapping[str, Any], config_name: str, version: str, endpoint_name: str, result: dict[str, str]
) -> bool:
    """True (result filled) when the endpoint already serves or is moving to `config_name`;
    DeployError when it is busy with something else or failed; False when an update may start."""
    endpoint_status = endpoint.get("EndpointStatus", "")
    pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    if pending == config_name or (
        endpoint.get("EndpointConfigName") == config_name and endpoint_status in ("Creating", "Updating")
    ):
        result.update(
            status="in_progress", reason=f"endpoint is already {endpoint_status} to version {version}"
        )
        return True
    if endpoint.get("EndpointConfigName") == config_name and endpoint_status != "Failed":
        result.update(
            status="unchanged", reason=f"endpoint already serves version {version} ({endpoint_status})"
        )
        return True
    if endpoint_status in BUSY_STATUSES:
        raise DeployError(f"endpoint {endpoint_name} is {endpoint_status}; retry when it is InService")
    if endpoint_status == "Failed":
        raise DeployError(
            f"endpoint {endpoint_name} is Failed ({endpoint.get('FailureReason', 'no reason')}); "
            "delete it and approve the version again"
        )
    return False


def _emit_metrics(result: Mapping[str, str], config: DeployConfig, source: str) -> None:
    """One embedded-metric-format line: CloudWatch turns it into a `Deployments` metric."""
    print(
        json.dumps(
            {
                "_aws": {
                    "Timestamp": int(time.time() * 1000),
                    "CloudWatchMetrics": [
                        {
                            "Namespace": config.metrics_namespace,
                            "Dimensions": [["Function", "Status"]],
                            "Metrics": [{"Name": "Deployments", "Unit": "Count"}],
                        }
                    ],
                },
                "Function": "deploy_model",
                "Status": result["status"],
                "Deployments": 1,
                "source": source,
                **result,
            }
        )
    )


def _sagemaker_client() -> Any:
    """Client factory: the only place the handler creates AWS clients (tests inject their own)."""
    import boto3

    return boto3.client("sagemaker")


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, str]:
    config = config_from_env()
    request = parse_event(event, config)
    result = deploy(request, sagemaker=_sagemaker_client(), config=config)
    _emit_metrics(result, config, request.source)
    return result
