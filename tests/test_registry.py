"""Local model registry: versions, files, approval transitions, errors, concurrency."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from features import spec
from pipeline.local.registry import (
    APPROVED,
    PENDING,
    REJECTED,
    InvalidStatusError,
    LocalModelRegistry,
    RegistryError,
    UnknownModelPackageError,
    approve,
    registry_root,
)

GROUP = "fraud-models"


@pytest.fixture
def artifacts(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "model.tar.gz"
    model.write_bytes(b"model-bytes")
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(
        json.dumps(
            {
                "binary_classification_metrics": {
                    "auc": {"value": 0.97, "standard_deviation": "NaN"},
                    "pr_auc": {"value": 0.81, "standard_deviation": "NaN"},
                    "f1": {"value": 0.7, "standard_deviation": "NaN"},
                    "threshold": {"value": 0.5, "standard_deviation": "NaN"},
                    "confusion_matrix": {"0": {"0": 1, "1": 0}, "1": {"0": 0, "1": 1}},
                }
            }
        )
    )
    return model, evaluation


def test_register_creates_numbered_versions_with_files(tmp_path: Path, artifacts) -> None:
    model, evaluation = artifacts
    reg = LocalModelRegistry(tmp_path / "reg")
    first = reg.register(GROUP, model, evaluation, PENDING, source={"run": "r1"})
    second = reg.register(GROUP, model, evaluation, APPROVED)
    assert (first.version, second.version) == (1, 2)
    vdir = tmp_path / "reg" / GROUP / "1"
    assert sorted(p.name for p in vdir.iterdir()) == ["evaluation.json", "model.tar.gz", "package.json"]
    assert (vdir / "model.tar.gz").read_bytes() == b"model-bytes"
    package = json.loads((vdir / "package.json").read_text())
    assert package["approval_status"] == PENDING
    assert package["metrics"] == {"auc": 0.97, "pr_auc": 0.81, "f1": 0.7, "threshold": 0.5}
    assert package["source"] == {"model_data": str(model.resolve()), "run": "r1"}
    assert package["created_at"].endswith("Z") and package["status_history"][0]["status"] == PENDING
    assert [p.version for p in reg.list(GROUP)] == [1, 2]
    got = reg.get(GROUP, 1)
    assert got.model_data == vdir / "model.tar.gz" and got.status == PENDING
    described = got.describe()
    assert described["ModelApprovalStatus"] == PENDING
    assert described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == str(vdir / "model.tar.gz")
    assert reg.list("other-group") == []
    assert not any(p.name.startswith(".staging") for p in (tmp_path / "reg" / GROUP).iterdir())


def test_status_transitions_and_latest_approved(tmp_path: Path, artifacts) -> None:
    model, evaluation = artifacts
    reg = LocalModelRegistry(tmp_path)
    for _ in range(3):
        reg.register(GROUP, model, evaluation)
    assert reg.latest_approved(GROUP) is None
    reg.set_status(GROUP, 1, APPROVED)
    reg.set_status(GROUP, 2, APPROVED)
    assert reg.latest_approved(GROUP).version == 2
    rejected = reg.set_status(GROUP, 2, REJECTED, reason="drift")
    assert rejected.approval_status == REJECTED
    assert [h["status"] for h in rejected.status_history] == [PENDING, APPROVED, REJECTED]
    assert rejected.status_history[-1]["reason"] == "drift"
    assert reg.get(GROUP, 2).approval_status == REJECTED  # persisted
    assert reg.latest_approved(GROUP).version == 1
    assert reg.set_status(GROUP, 2, APPROVED).approval_status == APPROVED  # Rejected -> Approved is allowed
    assert reg.latest_approved(GROUP).version == 2
    with pytest.raises(InvalidStatusError, match="cannot return to PendingManualApproval"):
        reg.set_status(GROUP, 2, PENDING)
    assert reg.set_status(GROUP, 3, PENDING).approval_status == PENDING  # no-op


def test_errors_are_clear(tmp_path: Path, artifacts) -> None:
    model, evaluation = artifacts
    reg = LocalModelRegistry(tmp_path)
    reg.register(GROUP, model, evaluation)
    with pytest.raises(InvalidStatusError, match="invalid approval status 'approved'"):
        reg.set_status(GROUP, 1, "approved")
    with pytest.raises(InvalidStatusError):
        reg.register(GROUP, model, evaluation, "Done")
    with pytest.raises(UnknownModelPackageError, match=r"fraud-models/7 not found \(versions: 1\)"):
        reg.get(GROUP, 7)
    with pytest.raises(UnknownModelPackageError):
        reg.set_status(GROUP, 7, APPROVED)
    with pytest.raises(RegistryError, match="model artifact not found"):
        reg.register(GROUP, tmp_path / "nope.tar.gz", evaluation)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(RegistryError, match="not JSON"):
        reg.register(GROUP, model, bad)
    with pytest.raises(RegistryError, match="invalid model package group"):
        reg.register("../escape", model, evaluation)
    assert [p.version for p in reg.list(GROUP)] == [1]  # failed registrations left nothing behind
    assert isinstance(UnknownModelPackageError("x"), ValueError)  # CLI catches ValueError


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path, artifacts) -> None:
    model, evaluation = artifacts
    reg = LocalModelRegistry(tmp_path)
    versions: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            v = LocalModelRegistry(tmp_path).register(GROUP, model, evaluation).version
            with lock:
                versions.append(v)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(1, 19))
    assert [p.version for p in reg.list(GROUP)] == list(range(1, 19))


def test_approve_function_for_the_cli(tmp_path: Path, artifacts) -> None:
    model, evaluation = artifacts
    reg = LocalModelRegistry(registry_root(tmp_path))
    reg.register(spec.MODEL_PACKAGE_GROUP, model, evaluation)
    reg.register(spec.MODEL_PACKAGE_GROUP, model, evaluation)
    assert approve(tmp_path, 1).approval_status == APPROVED
    assert approve(tmp_path).version == 2  # latest when no version is given
    assert approve(tmp_path, 2, REJECTED).approval_status == REJECTED
    assert reg.latest_approved(spec.MODEL_PACKAGE_GROUP).version == 1
    with pytest.raises(UnknownModelPackageError, match="no model packages"):
        approve(tmp_path / "empty")
