"""deploy_model: moto for the SageMaker control plane, botocore Stubber where moto lacks update_endpoint."""

from __future__ import annotations

import json
import re

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from lambdas.deploy_model import handler as h

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sm-exec"
GROUP = "fraud-detection-models"
ENDPOINT = "fraud-detection-endpoint"


def _config(**overrides) -> h.DeployConfig:
    values = {
        "endpoint_name": ENDPOINT,
        "model_package_group_name": GROUP,
        "execution_role_arn": ROLE,
        "instance_type": "ml.m5.large",
        "initial_instance_count": 1,
        "rollback_alarm_names": ("fraud-endpoint-5xx", "fraud-endpoint-latency"),
    }
    values.update(overrides)
    return h.DeployConfig(**values)


@pytest.fixture
def sm():
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        yield client


def _version_names(version: int) -> tuple[str, h.DeployConfig, str, str]:
    """A model package ARN of GROUP, the default config, and the model and endpoint-config names the
    handler derives for that version."""
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/{version}"
    config = _config()
    model_name = h.model_name_for(GROUP, version)
    return arn, config, model_name, h.endpoint_config_name_for(ENDPOINT, version, config, model_name)


def _register(sm, status: str = "PendingManualApproval", group: str = GROUP) -> str:
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:3.0-5",
                    "ModelDataUrl": "s3://b/models/job/output/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelApprovalStatus=status,
    )["ModelPackageArn"]
    return arn


def _pipeline_event(arn: str, endpoint: str = ENDPOINT) -> dict:
    return {"model_package_arn": arn, "endpoint_name": endpoint}


def _eventbridge_event(arn: str, status: str) -> dict:
    return {
        "version": "0",
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Model Package State Change",
        "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": GROUP, "ModelApprovalStatus": status},
    }


def test_pending_package_is_a_no_op(sm):
    arn = _register(sm)
    config = _config()
    result = h.deploy(h.parse_event(_pipeline_event(arn), config), sagemaker=sm, config=config)
    assert result["status"] == "skipped"
    assert "PendingManualApproval" in result["reason"] and "only Approved" in result["reason"]
    assert result["endpoint_config_name"] == ""  # LambdaOutput values are always strings
    assert all(isinstance(v, str) for v in result.values())
    assert sm.list_models()["Models"] == []
    assert sm.list_endpoints()["Endpoints"] == []


def test_approved_package_creates_model_config_endpoint_then_is_idempotent(sm):
    arn = _register(sm, "Approved")
    config = _config()
    request = h.parse_event(_pipeline_event(arn), config)
    first = h.deploy(request, sagemaker=sm, config=config)
    assert first["status"] == "created"
    assert first["model_package_version"] == "1"
    model = sm.describe_model(ModelName=first["model_name"])
    assert model["Containers"] == [{"ModelPackageName": arn}]
    assert model["ExecutionRoleArn"] == ROLE
    (variant,) = sm.describe_endpoint_config(EndpointConfigName=first["endpoint_config_name"])[
        "ProductionVariants"
    ]
    assert variant["ModelName"] == first["model_name"]
    assert variant["InstanceType"] == "ml.m5.large" and variant["InitialInstanceCount"] == 1
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == first["endpoint_config_name"]

    second = h.deploy(request, sagemaker=sm, config=config)
    assert second["status"] == "unchanged"
    assert second["endpoint_config_name"] == first["endpoint_config_name"]
    assert len(sm.list_models()["Models"]) == 1
    assert len(sm.list_endpoint_configs()["EndpointConfigs"]) == 1
    assert len(sm.list_endpoints()["Endpoints"]) == 1


def test_eventbridge_approval_deploys_to_the_configured_endpoint(sm):
    arn = _register(sm, "Approved")
    config = _config(endpoint_name="from-env-endpoint")
    request = h.parse_event(_eventbridge_event(arn, "Approved"), config)
    assert request == h.DeployRequest(arn, "from-env-endpoint", "eventbridge")
    assert h.deploy(request, sagemaker=sm, config=config)["status"] == "created"
    assert sm.describe_endpoint(EndpointName="from-env-endpoint")["EndpointStatus"]


def test_rejected_by_eventbridge_is_skipped_and_other_groups_are_ignored(sm):
    rejected = _register(sm, "Rejected")
    config = _config()
    result = h.deploy(
        h.parse_event(_eventbridge_event(rejected, "Rejected"), config), sagemaker=sm, config=config
    )
    assert result["status"] == "skipped" and "Rejected" in result["reason"]
    sm.create_model_package_group(ModelPackageGroupName="other-group")
    other = _register(sm, "Approved", group="other-group")
    result = h.deploy(h.parse_event(_pipeline_event(other), config), sagemaker=sm, config=config)
    assert result["status"] == "skipped" and "other-group" in result["reason"]
    assert sm.list_endpoints()["Endpoints"] == []


def _stubbed_client():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    return client, Stubber(client)


def _package(arn: str, version: int = 2, status: str = "Approved") -> dict:
    return {
        "ModelPackageName": GROUP,
        "ModelPackageGroupName": GROUP,
        "ModelPackageVersion": version,
        "ModelPackageArn": arn,
        "CreationTime": "2026-01-01T00:00:00Z",
        "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": status,
        "ModelPackageStatusDetails": {"ValidationStatuses": []},
    }


def _endpoint(config_name: str, status: str = "InService", **extra) -> dict:
    return {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}",
        "EndpointConfigName": config_name,
        "EndpointStatus": status,
        "CreationTime": "2026-01-01T00:00:00Z",
        "LastModifiedTime": "2026-01-01T00:00:00Z",
        **extra,
    }


def test_existing_endpoint_gets_blue_green_update_with_rollback_alarms():
    arn, config, model_name, config_name = _version_names(2)
    client, stub = _stubbed_client()
    stub.add_response("describe_model_package", _package(arn), {"ModelPackageName": arn})
    stub.add_response(
        "describe_model",
        {
            "ModelName": model_name,
            "ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/{model_name}",
            "CreationTime": "2026-01-01T00:00:00Z",
        },
        {"ModelName": model_name},
    )
    stub.add_client_error(
        "describe_endpoint_config",
        service_error_code="ValidationException",
        service_message=f"Could not find endpoint configuration {config_name}.",
        expected_params={"EndpointConfigName": config_name},
    )
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/{config_name}"},
        {
            "EndpointConfigName": config_name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model_name,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                    "InitialVariantWeight": 1.0,
                }
            ],
            "Tags": [
                {"Key": "ModelPackageArn", "Value": arn},
                {"Key": "ModelPackageGroupName", "Value": GROUP},
            ],
        },
    )
    stub.add_response(
        "describe_endpoint", _endpoint("fraud-detection-endpoint-v1-abc123"), {"EndpointName": ENDPOINT}
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}"},
        {
            "EndpointName": ENDPOINT,
            "EndpointConfigName": config_name,
            "RetainAllVariantProperties": False,
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300},
                    "TerminationWaitInSeconds": 300,
                    "MaximumExecutionTimeoutInSeconds": 3600,
                },
                "AutoRollbackConfiguration": {
                    "Alarms": [{"AlarmName": "fraud-endpoint-5xx"}, {"AlarmName": "fraud-endpoint-latency"}]
                },
            },
        },
    )
    with stub:
        result = h.deploy(h.DeployRequest(arn, ENDPOINT, "pipeline"), sagemaker=client, config=config)
    stub.assert_no_pending_responses()
    assert result["status"] == "updated" and "fraud-detection-endpoint-v1-abc123" in result["reason"]
    assert result["endpoint_config_name"] == config_name


def test_no_alarms_means_no_auto_rollback_block():
    assert "AutoRollbackConfiguration" not in h.deployment_config(_config(rollback_alarm_names=()))


def test_busy_endpoint_fails_the_invocation_and_pending_same_version_is_in_progress():
    arn, config, model_name, config_name = _version_names(3)
    existing = {
        "ModelName": model_name,
        "ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/{model_name}",
        "CreationTime": "2026-01-01T00:00:00Z",
    }
    endpoint_config = {
        "EndpointConfigName": config_name,
        "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/{config_name}",
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model_name}],
        "CreationTime": "2026-01-01T00:00:00Z",
    }

    def run(endpoint: dict) -> dict:
        client, stub = _stubbed_client()
        stub.add_response("describe_model_package", _package(arn, 3))
        stub.add_response("describe_model", existing)
        stub.add_response("describe_endpoint_config", endpoint_config)
        stub.add_response("describe_endpoint", endpoint)
        with stub:
            return h.deploy(h.DeployRequest(arn, ENDPOINT, "pipeline"), sagemaker=client, config=config)

    with pytest.raises(h.DeployError, match="Updating; retry"):
        run(_endpoint("other-config", "Updating"))
    pending = _endpoint(
        "other-config", "Updating", PendingDeploymentSummary={"EndpointConfigName": config_name}
    )
    assert run(pending)["status"] == "in_progress"
    with pytest.raises(h.DeployError, match="Failed"):
        run(_endpoint("other-config", "Failed", FailureReason="capacity"))


def test_resource_names_are_valid_and_stable():
    pattern = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    long_group = "a-very-long-model-package-group-name-for-fraud-detection-models-x"
    name = h.model_name_for(long_group, 12345)
    assert pattern.match(name) and len(name) <= 63
    assert name == h.model_name_for(long_group, 12345)
    assert h.model_name_for(long_group, 12345) != h.model_name_for(long_group, 12346)
    config = _config()
    a = h.endpoint_config_name_for(ENDPOINT, 7, config, "m")
    assert pattern.match(a)
    assert a != h.endpoint_config_name_for(ENDPOINT, 7, _config(instance_type="ml.c5.xlarge"), "m")


def test_config_from_env_and_bad_events():
    env = {
        "ENDPOINT_NAME": ENDPOINT,
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "EXECUTION_ROLE_ARN": ROLE,
        "INSTANCE_TYPE": "ml.c5.xlarge",
        "INITIAL_INSTANCE_COUNT": "2",
        "ROLLBACK_ALARM_NAMES": " a-alarm , b-alarm,,",
        "METRICS_NAMESPACE": "Fraud",
    }
    config = h.config_from_env(env)
    assert config.rollback_alarm_names == ("a-alarm", "b-alarm")
    assert (config.instance_type, config.initial_instance_count, config.metrics_namespace) == (
        "ml.c5.xlarge",
        2,
        "Fraud",
    )
    assert h.config_from_env({**env, "ROLLBACK_ALARM_NAMES": ""}).rollback_alarm_names == ()
    with pytest.raises(h.DeployError, match="EXECUTION_ROLE_ARN"):
        h.config_from_env({"ENDPOINT_NAME": "e", "MODEL_PACKAGE_GROUP_NAME": "g"})
    with pytest.raises(h.DeployError, match="model_package_arn"):
        h.parse_event({"endpoint_name": "e"}, config)
    with pytest.raises(h.DeployError, match="ModelPackageArn"):
        h.parse_event({"detail-type": h.MODEL_PACKAGE_STATE_CHANGE, "detail": {}}, config)


def test_handler_reads_env_and_logs_an_embedded_metric(sm, monkeypatch, capsys):
    arn = _register(sm, "Approved")
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("MODEL_PACKAGE_GROUP_NAME", GROUP)
    monkeypatch.setenv("EXECUTION_ROLE_ARN", ROLE)
    monkeypatch.setenv("METRICS_NAMESPACE", "FraudTest")
    monkeypatch.delenv("ROLLBACK_ALARM_NAMES", raising=False)
    monkeypatch.setattr(h, "_sagemaker_client", lambda: sm)
    result = h.handler(_eventbridge_event(arn, "Approved"), None)
    assert result["status"] == "created"
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "FraudTest"
    assert line["Deployments"] == 1 and line["Status"] == "created" and line["source"] == "eventbridge"


def test_concurrent_invocations_creating_the_same_resources_do_not_fail():
    # The pipeline step and the approval event can deploy the same Approved version at once.
    arn, config, model_name, config_name = _version_names(4)
    client, stub = _stubbed_client()
    stub.add_response("describe_model_package", _package(arn, 4))
    stub.add_client_error("describe_model", "ValidationException", f"Could not find model {model_name}.")
    stub.add_client_error(
        "create_model", "ValidationException", f'Cannot create already existing model "{model_name}".'
    )
    stub.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": config_name,
            "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/{config_name}",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model_name}],
            "CreationTime": "2026-01-01T00:00:00Z",
        },
    )
    stub.add_client_error("describe_endpoint", "ValidationException", f"Could not find endpoint {ENDPOINT}.")
    stub.add_client_error(
        "create_endpoint", "ValidationException", f'Cannot create already existing endpoint "{ENDPOINT}".'
    )
    with stub:
        result = h.deploy(h.DeployRequest(arn, ENDPOINT, "pipeline"), sagemaker=client, config=config)
    stub.assert_no_pending_responses()
    assert result["status"] == "in_progress"
    client, stub = _stubbed_client()
    stub.add_response("describe_model_package", _package(arn, 4))
    stub.add_client_error("describe_model", "ValidationException", f"Could not find model {model_name}.")
    stub.add_client_error("create_model", "ResourceLimitExceeded", "too many models")
    with stub, pytest.raises(h.ClientError, match="ResourceLimitExceeded"):
        h.deploy(h.DeployRequest(arn, ENDPOINT, "pipeline"), sagemaker=client, config=config)


def test_update_racing_with_a_concurrent_invocation_is_resolved_by_reading_the_endpoint_again():
    """Both invocations saw the endpoint InService on the old version; the second UpdateEndpoint is
    refused by the service. The same version in flight is success, another version is 'busy'."""
    arn, config, model_name, config_name = _version_names(5)

    def run(after_refusal: dict | None, error_code: str = "ValidationException") -> dict:
        client, stub = _stubbed_client()
        stub.add_response("describe_model_package", _package(arn, 5))
        stub.add_response(
            "describe_model",
            {"ModelName": model_name, "ModelArn": f"arn:aws:sagemaker:{REGION}:1:model/m", "CreationTime": 0},
        )
        stub.add_response(
            "describe_endpoint_config",
            {
                "EndpointConfigName": config_name,
                "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:1:endpoint-config/c",
                "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model_name}],
                "CreationTime": 0,
            },
        )
        stub.add_response("describe_endpoint", _endpoint("old-config"))
        stub.add_client_error("update_endpoint", error_code, "Cannot update in-progress endpoint")
        if after_refusal is not None:
            stub.add_response("describe_endpoint", after_refusal)
        with stub:
            result = h.deploy(h.DeployRequest(arn, ENDPOINT, "eventbridge"), sagemaker=client, config=config)
        stub.assert_no_pending_responses()
        return result

    same = _endpoint("old-config", "Updating", PendingDeploymentSummary={"EndpointConfigName": config_name})
    result = run(same)
    assert result["status"] == "in_progress" and result["endpoint_config_name"] == config_name
    other = _endpoint("old-config", "Updating", PendingDeploymentSummary={"EndpointConfigName": "v6-config"})
    with pytest.raises(h.DeployError, match="Updating; retry"):
        run(other)
    with pytest.raises(h.ClientError, match="ThrottlingException"):
        run(None, error_code="ThrottlingException")
