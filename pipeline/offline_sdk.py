"""Build the pipeline offline: the SageMaker SDK without credentials, network or AWS calls.

The SDK creates boto3 clients at import and step-construction time and validates roles through
IAM unless told otherwise, so the definition is built inside `offline_aws()`: dummy credentials,
no instance metadata, role validation off, and one patch of an SDK internal (its config schema is
validated once instead of on every lookup). Everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

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
