"""The model artifact shared by training, evaluation, the local endpoint and SageMaker hosting.

The SageMaker built-in XGBoost algorithm (image 3.0-5) saves its model with
`Booster.save_model(os.path.join(model_dir, "xgboost-model"))` (no file extension, so
xgboost >= 2.1 writes UBJSON) and SageMaker tars `/opt/ml/model` into `model.tar.gz`.
Its serving stack loads *every* file in the extracted model directory (several files
become an ensemble), so the archive must hold exactly one member, `xgboost-model`.
This module writes and reads that exact layout, so one artifact serves in both places.

It also reads the training channels: label-first, header-less CSV part files as the
Spark job writes them (`DIR/part-*.csv`, plus `_SUCCESS`/`.crc` files that are skipped).
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from shared.errors import UserError

# xgboost's OpenMP threads spin while idle by default; on a busy laptop (Spark, the Flink job and
# the endpoint share the cores) that made training ~8x slower here. PASSIVE makes idle threads
# sleep. It only takes effect if set before xgboost is first imported, which importing this
# module first ensures for training, evaluation and serving; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODEL_FILENAME = "xgboost-model"
"""Name of the single file inside model.tar.gz (as the built-in container writes it)."""
MODEL_ARCHIVE = "model.tar.gz"


class ArtifactError(UserError, ValueError):
    """A model artifact or data channel is missing or malformed (user error, not a bug)."""


def _xgb():
    import xgboost as xgb  # imported lazily: reading CSV channels must not need xgboost

    return xgb


# --- Model --------------------------------------------------------------------
def write_model_archive(booster, archive_path: str | Path) -> Path:
    """Write `booster` as `model.tar.gz` holding only `xgboost-model`, atomically."""
    archive_path = Path(archive_path)
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive_path.parent, prefix=".model-") as tmp:
        model_file = Path(tmp) / MODEL_FILENAME
        save_model_file(booster, model_file)
        staged = Path(tmp) / MODEL_ARCHIVE
        with tarfile.open(staged, "w:gz") as tar:
            info = tar.gettarinfo(str(model_file), arcname=MODEL_FILENAME)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with model_file.open("rb") as fh:
                tar.addfile(info, fh)
        os.replace(staged, archive_path)
    return archive_path


def save_model_file(booster, path: str | Path) -> Path:
    """`Booster.save_model` to an extension-less path, as the container does (UBJSON in xgboost 3)."""
    path = Path(path)
    raw = booster.save_raw(raw_format="ubj")  # same bytes as save_model("xgboost-model"), without the warning
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(bytes(raw))
    os.replace(tmp, path)
    return path


def read_model_bytes(path: str | Path) -> bytes:
    """Raw `xgboost-model` bytes from a model.tar.gz, a model directory or the file itself."""
    path = Path(path)
    if path.is_dir():
        if (path / MODEL_FILENAME).is_file():
            return (path / MODEL_FILENAME).read_bytes()
        if (path / MODEL_ARCHIVE).is_file():
            return read_model_bytes(path / MODEL_ARCHIVE)
        raise ArtifactError(f"no {MODEL_FILENAME} or {MODEL_ARCHIVE} in directory {path}")
    if not path.is_file():
        raise ArtifactError(f"model not found: {path}")
    if tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            names = [m.name.lstrip("./") for m in members]
            if names != [MODEL_FILENAME]:
                raise ArtifactError(
                    f"{path} must hold exactly one file '{MODEL_FILENAME}' (SageMaker XGBoost layout), found {names}"
                )
            fh = tar.extractfile(members[0])
            assert fh is not None
            return fh.read()
    return path.read_bytes()


def load_booster(path: str | Path, nthread: int | None = None):
    """Load an `xgboost.Booster` from any artifact form `read_model_bytes` accepts."""
    raw = read_model_bytes(path)  # before importing xgboost (seconds): a missing file fails fast
    xgb = _xgb()
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(raw))
    except xgb.core.XGBoostError as exc:
        raise ArtifactError(f"{path} is not an XGBoost model: {str(exc).splitlines()[0]}") from exc
    if nthread is not None:
        booster.set_param("nthread", nthread)
    return booster


# --- Data channels ------------------------------------------------------------
def channel_files(channel: str | Path) -> list[Path]:
    """Data files of a channel directory (or the single file given), Spark markers skipped."""
    channel = Path(channel)
    if channel.is_file():
        return [channel]
    if not channel.is_dir():
        raise ArtifactError(f"data channel not found: {channel}")
    files = sorted(
        p
        for p in channel.rglob("*")
        if p.is_file()
        and not p.name.startswith((".", "_"))
        and not p.name.endswith(".crc")
        and p.stat().st_size > 0
    )
    if not files:
        raise ArtifactError(f"data channel {channel} holds no data files")
    return files


def _read_csv_file(file: Path) -> np.ndarray:
    """One header-less numeric CSV file as a 2-D float64 array (pyarrow, or pandas where it is absent)."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # e.g. a processing image without pyarrow
        import pandas as pd

        try:
            # pandas 3 parses floats exactly by default; older versions need "round_trip".
            exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
            frame = pd.read_csv(file, header=None, dtype=np.float64, **exact)
        except (ValueError, pd.errors.ParserError) as exc:
            raise ArtifactError(f"{file}: not a numeric CSV ({str(exc).splitlines()[0]})") from exc
        return frame.to_numpy()
    try:
        table = pacsv.read_csv(
            file,
            read_options=pacsv.ReadOptions(autogenerate_column_names=True),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        raise ArtifactError(f"{file}: not a numeric CSV ({str(exc).splitlines()[0]})") from exc
    try:
        cols = [np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float64) for c in table.columns]
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{file}: non-numeric value ({exc})") from exc
    return np.column_stack(cols) if cols else np.empty((0, 0))


def read_label_first_csv(channel: str | Path, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, features) from label-first header-less CSV part files; empty fields are missing (NaN)."""
    blocks: list[np.ndarray] = []
    width: int | None = None
    for file in channel_files(channel):
        block = _read_csv_file(file)
        if block.shape[0] == 0:
            continue
        if width is None:
            width = block.shape[1]
        elif block.shape[1] != width:
            raise ArtifactError(f"{file}: {block.shape[1]} columns, other part files have {width}")
        blocks.append(block)
    if not blocks:
        raise ArtifactError(f"data channel {channel} holds no rows")
    data = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    if n_features is not None and data.shape[1] != n_features + 1:
        raise ArtifactError(
            f"data channel {channel}: expected {n_features + 1} columns (label + {n_features} features), "
            f"found {data.shape[1]}"
        )
    labels = data[:, 0]
    if np.isnan(labels).any():
        raise ArtifactError(f"data channel {channel}: missing label values")
    return labels, np.ascontiguousarray(data[:, 1:])
