"""The code the SageMaker jobs run, bundled offline and addressed by content (docs/design.md).

`build_code_bundle` reads the shipped packages (`CODE_PACKAGES`) into `src/<package>/...py` for the
processing jobs plus `deps.zip` for Spark's `--py-files`; its version is a hash of the sources, so
the pipeline definition names `s3://.../code/<version>/` and `upsert` uploads exactly that bundle.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]

CODE_PACKAGES: tuple[str, ...] = ("features", "processing", "shared", "training")
"""Shipped to the jobs: the shared feature module, the step scripts (same code as local mode) and
the small `shared` helpers they import (user errors, atomic writes)."""
SPARK_PY_FILES_PACKAGES: tuple[str, ...] = ("features", "processing", "shared")
"""Zipped for `spark-submit --py-files` so the driver and every executor import them."""


class DefinitionError(UserError, ValueError):
    """Bad input to the definition (user error: one-line message on the CLI, exit 2)."""


@dataclass(frozen=True)
class CodeBundle:
    """The files the jobs run, keyed by path under the code prefix, and their content hash."""

    version: str
    files: dict[str, bytes] = field(repr=False)


def _package_files(root: Path, packages: tuple[str, ...]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _deterministic_zip(files: dict[str, bytes]) -> bytes:
    """A zip whose bytes depend only on the contents (fixed timestamps), so hashes are stable."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name], compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def build_code_bundle(root: Path = REPO_ROOT) -> CodeBundle:
    """`src/<package>/...py` for the processing jobs plus `deps.zip` for Spark's --py-files."""
    sources = _package_files(root, CODE_PACKAGES)
    if "features/spec.py" not in sources:
        raise DefinitionError(f"features/spec.py not found under {root}")
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + hashlib.sha256(sources[name]).digest())
    files = {f"src/{name}": content for name, content in sources.items()}
    files["deps.zip"] = _deterministic_zip(
        {n: c for n, c in sources.items() if n.split("/", 1)[0] in SPARK_PY_FILES_PACKAGES}
    )
    return CodeBundle(version=digest.hexdigest()[:16], files=files)
