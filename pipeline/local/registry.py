"""Local model registry: a directory that mirrors SageMaker model package groups.

    ROOT/<group>/<version>/model.tar.gz      the artifact (copied, so the registry owns it)
    ROOT/<group>/<version>/evaluation.json   model-quality metrics (processing/evaluate.py)
    ROOT/<group>/<version>/package.json      status, times, metrics summary, source, status history

Versions are 1, 2, 3... per group, as in SageMaker. A version directory appears atomically
(staged then renamed) and package.json is replaced atomically, under a per-group file lock,
so concurrent registrations and status changes from several processes never clash.
Approval statuses are SageMaker's: PendingManualApproval, Approved, Rejected; a package can
move between Approved and Rejected but never back to PendingManualApproval.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features import spec

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
APPROVAL_STATUSES: tuple[str, ...] = (PENDING, APPROVED, REJECTED)
REGISTRY_DIRNAME = "registry"
"""The registry lives at WORK_DIR/registry in local runs."""

MODEL_FILE = "model.tar.gz"
EVALUATION_FILE = "evaluation.json"
PACKAGE_FILE = "package.json"
_SUMMARY_METRICS = ("auc", "pr_auc", "precision", "recall", "f1", "accuracy", "threshold")


class RegistryError(ValueError):
    """Base class: a registry request that cannot be honoured (user error)."""


class InvalidStatusError(RegistryError):
    """Unknown approval status or a transition SageMaker does not allow."""


class UnknownModelPackageError(RegistryError, LookupError):
    """No such group or version."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _validate_status(status: str) -> str:
    if status not in APPROVAL_STATUSES:
        raise InvalidStatusError(
            f"invalid approval status {status!r}; expected one of {', '.join(APPROVAL_STATUSES)}"
        )
    return status


def summarize_metrics(evaluation: Mapping[str, Any]) -> dict[str, float | None]:
    """Flat {metric: value} of the headline metrics of an evaluation.json document."""
    block = evaluation.get("binary_classification_metrics", {})
    out: dict[str, float | None] = {}
    for name in _SUMMARY_METRICS:
        entry = block.get(name)
        if isinstance(entry, Mapping) and "value" in entry:
            out[name] = entry["value"]
    return out


@dataclass
class ModelPackage:
    """One registered version (the content of package.json plus where it lives)."""

    group: str
    version: int
    approval_status: str
    created_at: str
    updated_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    status_history: list[dict[str, str]] = field(default_factory=list)
    path: str = ""

    @property
    def status(self) -> str:
        """Alias of `approval_status`."""
        return self.approval_status

    @property
    def model_data(self) -> Path:
        return Path(self.path) / MODEL_FILE

    @property
    def evaluation_path(self) -> Path:
        return Path(self.path) / EVALUATION_FILE

    @property
    def arn(self) -> str:
        """A stable identifier shaped like a model package ARN (local scheme)."""
        return f"local:model-package/{self.group}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    def describe(self) -> dict[str, Any]:
        """The fields of SageMaker DescribeModelPackage that deployment code reads."""
        return {
            "ModelPackageGroupName": self.group,
            "ModelPackageVersion": self.version,
            "ModelPackageArn": self.arn,
            "ModelApprovalStatus": self.approval_status,
            "CreationTime": self.created_at,
            "LastModifiedTime": self.updated_at,
            "InferenceSpecification": {"Containers": [{"ModelDataUrl": str(self.model_data)}]},
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": str(self.evaluation_path)}
                }
            },
            "CustomerMetadataProperties": {k: str(v) for k, v in self.metrics.items()},
        }


def _write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class LocalModelRegistry:
    """Model package groups under `root`; every method is safe across threads and processes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- helpers --------------------------------------------------------------
    def _group_dir(self, group: str) -> Path:
        if not group or "/" in group or group.startswith("."):
            raise RegistryError(f"invalid model package group name {group!r}")
        return self.root / group

    @contextlib.contextmanager
    def _locked(self, group: str) -> Iterator[Path]:
        gdir = self._group_dir(group)
        gdir.mkdir(parents=True, exist_ok=True)
        with (gdir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield gdir
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _versions_in(gdir: Path) -> list[int]:
        if not gdir.is_dir():
            return []
        return sorted(
            int(p.name) for p in gdir.iterdir() if p.name.isdigit() and (p / PACKAGE_FILE).is_file()
        )

    @staticmethod
    def _read(vdir: Path) -> ModelPackage:
        data = json.loads((vdir / PACKAGE_FILE).read_text())
        return ModelPackage(**data, path=str(vdir))

    # --- API ------------------------------------------------------------------
    def register(
        self,
        group: str,
        model_tar: str | Path,
        evaluation_json: str | Path | None = None,
        approval_status: str = PENDING,
        *,
        source: Mapping[str, Any] | None = None,
    ) -> ModelPackage:
        """Copy the artifact (+ evaluation) into the next version of `group` and return it."""
        _validate_status(approval_status)
        model_tar = Path(model_tar)
        if not model_tar.is_file():
            raise RegistryError(f"model artifact not found: {model_tar}")
        evaluation: dict[str, Any] = {}
        if evaluation_json is not None:
            evaluation_json = Path(evaluation_json)
            try:
                evaluation = json.loads(evaluation_json.read_text())
            except FileNotFoundError:
                raise RegistryError(f"evaluation not found: {evaluation_json}") from None
            except json.JSONDecodeError as exc:
                raise RegistryError(f"evaluation {evaluation_json} is not JSON: {exc}") from None
        with self._locked(group) as gdir:
            staging = gdir / f".staging-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                shutil.copyfile(model_tar, staging / MODEL_FILE)
                if evaluation_json is not None:
                    shutil.copyfile(evaluation_json, staging / EVALUATION_FILE)
                existing = self._versions_in(gdir)
                version = (existing[-1] if existing else 0) + 1
                now = _now()
                package = ModelPackage(
                    group=group,
                    version=version,
                    approval_status=approval_status,
                    created_at=now,
                    updated_at=now,
                    metrics=summarize_metrics(evaluation),
                    source={"model_data": str(model_tar.resolve()), **dict(source or {})},
                    status_history=[{"status": approval_status, "time": now}],
                )
                _write_json_atomic(staging / PACKAGE_FILE, package.to_json())
                target = gdir / str(version)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        package.path = str(target)
        return package

    def list(self, group: str) -> list[ModelPackage]:
        """All versions of `group`, oldest first (empty for an unknown group)."""
        gdir = self._group_dir(group)
        return [self._read(gdir / str(v)) for v in self._versions_in(gdir)]

    def get(self, group: str, version: int) -> ModelPackage:
        """One version; UnknownModelPackageError when absent."""
        vdir = self._group_dir(group) / str(int(version))
        if not (vdir / PACKAGE_FILE).is_file():
            known = self._versions_in(self._group_dir(group))
            raise UnknownModelPackageError(
                f"model package {group}/{version} not found (versions: {', '.join(map(str, known)) or 'none'})"
            )
        return self._read(vdir)

    def set_status(self, group: str, version: int, status: str, *, reason: str | None = None) -> ModelPackage:
        """Change the approval status (Approved <-> Rejected, Pending -> either)."""
        _validate_status(status)
        with self._locked(group):
            package = self.get(group, version)
            if status == package.approval_status:
                return package
            if status == PENDING:
                raise InvalidStatusError(
                    f"model package {group}/{version} is {package.approval_status}; it cannot return to {PENDING}"
                )
            now = _now()
            package.approval_status = status
            package.updated_at = now
            entry = {"status": status, "time": now}
            if reason:
                entry["reason"] = reason
            package.status_history.append(entry)
            _write_json_atomic(Path(package.path) / PACKAGE_FILE, package.to_json())
        return package

    def latest_approved(self, group: str) -> ModelPackage | None:
        """The highest Approved version, or None (what deployment picks)."""
        approved = [p for p in self.list(group) if p.approval_status == APPROVED]
        return approved[-1] if approved else None

    def latest(self, group: str) -> ModelPackage | None:
        """The highest version whatever its status."""
        packages = self.list(group)
        return packages[-1] if packages else None


def registry_root(work_dir: str | Path) -> Path:
    """Where a local run keeps its registry."""
    return Path(work_dir) / REGISTRY_DIRNAME


def approve(
    work_dir: str | Path,
    version: int | None = None,
    status: str = APPROVED,
    group: str = spec.MODEL_PACKAGE_GROUP,
) -> ModelPackage:
    """What `run_pipeline.py approve --work-dir DIR --version N [--status S]` calls.

    `version=None` picks the latest version. Raises RegistryError (print it as a one-line error).
    """
    registry = LocalModelRegistry(registry_root(work_dir))
    if version is None:
        latest = registry.latest(group)
        if latest is None:
            raise UnknownModelPackageError(f"no model packages in {registry.root / group}")
        version = latest.version
    return registry.set_status(group, version, status)
