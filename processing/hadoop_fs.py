"""Directory and file operations through Hadoop's FileSystem (local disk, HDFS or S3 alike).

The Spark job's outputs may live on any Hadoop file system; these go through the session's JVM so
that one code path serves `--local` runs and SageMaker Processing (S3) without boto3 or a second
set of credentials."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


def _fs_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p


def move(spark: SparkSession, src: str, dst: str) -> bool:
    """Rename directory `src` to `dst` (replacing it); False when `src` does not exist."""
    fs, s = _fs_path(spark, src)
    _, d = _fs_path(spark, dst)
    fs.delete(d, True)
    if not fs.exists(s):
        return False
    fs.mkdirs(d.getParent())
    return bool(fs.rename(s, d))


def delete(spark: SparkSession, path: str) -> None:
    """Delete `path` recursively (no error when absent)."""
    fs, p = _fs_path(spark, path)
    fs.delete(p, True)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """One object/file holding `text` (UTF-8), replacing any existing one."""
    fs, p = _fs_path(spark, path)
    stream = fs.create(p, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()
