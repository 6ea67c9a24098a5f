#!/usr/bin/env python3
"""Build the deployable zips into dist/ (`make package`).

    python infra/package.py --out dist [--connector-jar PATH] [--operator-jar PATH] [--skip-flink]

Lambda zips (ingest_aggregates, score_transaction, deploy_model) hold the function's handler module and
every repository module it imports, transitively, with the `__init__.py` of each package on the way
(`repo_imports`: read from the import statements, so a module no handler imports, such as the test-event
builder lambdas/testing.py, never ships). The handlers use boto3 from the Lambda runtime, so a heavy
dependency slipping in would break on AWS, not here. Each zip is therefore import-checked in a
subprocess where only the standard library, boto3 and the zip's own packages can be imported.

flink-app.zip holds streaming/ + features/ + lib/<application jar>: the Kinesis SQL connector jar with the
job's Java operator classes merged in (Managed Flink takes one `jarfile` for a Python application, see
`application_jar`). The connector jar is not vendored: it comes from Maven Central (see CONNECTOR_HELP),
found via --connector-jar, $FLINK_KINESIS_CONNECTOR_JAR or infra/lib/*.jar; the operator jar is built by
`make install` (streaming/operator_jar.py), or given with --operator-jar.

Zips are deterministic (sorted entries, fixed timestamps) so an unchanged build has the same bytes and
infra/deploy.sh's content-hashed S3 keys only change CloudFormation resources when the code changed.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LAMBDAS: tuple[str, ...] = ("ingest_aggregates", "score_transaction", "deploy_model")
FLINK_ZIP = "flink-app.zip"
CONNECTOR_VERSION = "5.0.0-1.20"
CONNECTOR_ARTIFACT = "flink-sql-connector-kinesis"
CONNECTOR_IN_ZIP = f"lib/{CONNECTOR_ARTIFACT}.jar"
"""Path of the application jar inside flink-app.zip = the `jarfile` run option (streaming.yaml
FlinkConnectorJar): the Kinesis connector with the job's Java operator merged in (`application_jar`)."""
CONNECTOR_URL = (
    f"https://repo1.maven.org/maven2/org/apache/flink/{CONNECTOR_ARTIFACT}/{CONNECTOR_VERSION}/"
    f"{CONNECTOR_ARTIFACT}-{CONNECTOR_VERSION}.jar"
)
CONNECTOR_HELP = (
    f"the Kinesis SQL connector jar for Flink 1.20 is missing. Fetch it into infra/lib/ with\n"
    f"  curl -fL --create-dirs -o infra/lib/{CONNECTOR_ARTIFACT}-{CONNECTOR_VERSION}.jar {CONNECTOR_URL}\n"
    f"or\n"
    f"  mvn dependency:copy -Dartifact=org.apache.flink:{CONNECTOR_ARTIFACT}:{CONNECTOR_VERSION} "
    f"-DoutputDirectory=infra/lib\n"
    f"(or pass --connector-jar PATH / set FLINK_KINESIS_CONNECTOR_JAR), or build only the Lambdas with --skip-flink."
)

# Packages a python3.12 Lambda runtime provides besides the standard library.
RUNTIME_PACKAGES = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"})
# Environment variables of each function (the names are fixed in the templates; values are dummies).
LAMBDA_ENV: dict[str, tuple[str, ...]] = {
    "ingest_aggregates": ("FEATURE_GROUP_NAME", "FAILURE_QUEUE_URL", "METRICS_NAMESPACE"),
    "score_transaction": (
        "ENDPOINT_NAME",
        "BATCH_FEATURE_GROUP_NAME",
        "DECISIONS_STREAM_NAME",
        "FAILURE_QUEUE_URL",
        "FRAUD_THRESHOLD",
        "METRICS_NAMESPACE",
    ),
    "deploy_model": (
        "ENDPOINT_NAME",
        "MODEL_PACKAGE_GROUP_NAME",
        "EXECUTION_ROLE_ARN",
        "INSTANCE_TYPE",
        "INITIAL_INSTANCE_COUNT",
        "ROLLBACK_ALARM_NAMES",
        "METRICS_NAMESPACE",
    ),
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_EXCLUDED_DIRS = frozenset({"__pycache__", "tests", ".pytest_cache", ".ruff_cache"})
_CODE_SUFFIXES = frozenset({".py", ".sql", ".json"})


class PackagingError(Exception):
    """A user-facing build problem: reported as one line (or a short block) on stderr, exit 1."""


def handler_path(name: str) -> str:
    """Lambda `Handler` string of a function (the templates use exactly this)."""
    return f"lambdas.{name}.handler.handler"


def _source_files(directory: Path) -> Iterator[Path]:
    """Code files under `directory`, skipping caches and tests."""
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part in _EXCLUDED_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in _CODE_SUFFIXES:
            yield path


def module_file(module: str, repo: Path = REPO) -> Path | None:
    """The repository file of a dotted module name (a package's `__init__.py`); None outside the repository."""
    if not module or module.startswith("."):
        return None
    base = repo.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> Iterator[str]:
    """Every module name an import statement of `path` may load (anywhere in the file, function bodies
    included); for `from x import y`, both x and x.y (y may be a submodule)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..a import b
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names if alias.name != "*")


def repo_imports(module: str, repo: Path = REPO) -> dict[str, Path]:
    """Module name -> file of `module` and of every repository module it imports, transitively.

    Importing a.b.c runs a/__init__.py and a/b/__init__.py first, so every package on the way is in.
    Modules outside the repository (the standard library, boto3) are not followed."""
    found: dict[str, Path] = {}
    pending = [module]
    while pending:
        parts = pending.pop().split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in found:
                continue
            path = module_file(name, repo)
            if path is None:
                break
            found[name] = path
            pending.extend(_imported_names(path, name))
    return found


def lambda_members(name: str, repo: Path = REPO) -> dict[str, Path]:
    """Archive name -> source file for one Lambda: its handler and the repository modules it imports."""
    handler = repo / "lambdas" / name / "handler.py"
    if not handler.is_file():
        raise PackagingError(f"{handler.relative_to(repo)} not found: cannot package Lambda {name!r}")
    modules = repo_imports(handler_path(name).rpartition(".")[0], repo)
    return {path.relative_to(repo).as_posix(): path for path in modules.values()}


def operator_jar_module():
    """streaming/operator_jar.py (builds and finds the Java operator's jar; no PyFlink import)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from streaming import operator_jar

    return operator_jar


def find_operator_jar(explicit: str | None = None) -> Path:
    """The Java operator's jar (`make install` builds it): --operator-jar, else the Flink venv's."""
    ops = operator_jar_module()
    try:
        return ops.find_jar(explicit)
    except ops.BuildError as err:
        raise PackagingError(str(err)) from None


def application_jar(connector: Path, operator: Path, target: Path) -> Path:
    """The one jar of the application (run option `jarfile`): the Kinesis connector's entries plus
    the operator's classes, deterministic (sorted entries, fixed timestamps).

    Managed Service for Apache Flink takes a single `jarfile` for a Python application: "Amazon
    Managed Service for Apache Flink expects a single JAR file containing all JAR dependencies of a
    PyFlink application ... packaged in a single uber-jar" (aws-samples/amazon-managed-service-for-
    apache-flink-examples, python/README.md); the run option is "jarfile: a Java JAR file containing
    Java user-defined functions" (Managed Flink developer guide, "Create your Managed Service for
    Apache Flink Python application"). So the operator's classes go into the connector's jar."""
    with zipfile.ZipFile(connector) as zf:
        entries = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    for name, data in operator_jar_module().jar_classes(operator):
        if name in entries:
            raise PackagingError(f"{name} is in both {connector.name} and {operator.name}")
        entries[name] = data
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        names = sorted(entries, key=lambda n: (n != "META-INF/MANIFEST.MF", n))  # manifest first
        for name in names:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, entries[name])
    return target


def flink_members(jar: Path, repo: Path = REPO) -> dict[str, Path]:
    """Archive name -> source file for the Managed Flink application zip (`jar`: the application
    jar, `application_jar`)."""
    members: dict[str, Path] = {}
    for top in ("streaming", "features"):
        for path in _source_files(repo / top):
            members[path.relative_to(repo).as_posix()] = path
    if "streaming/job.py" not in members:
        raise PackagingError(
            "streaming/job.py not found: it is the PyFlink entry point (run option 'python')"
        )
    members[CONNECTOR_IN_ZIP] = jar
    return members


def write_zip(target: Path, members: dict[str, Path]) -> str:
    """Write a deterministic zip; returns its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for arcname in sorted(members):
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, members[arcname].read_bytes())
    tmp.replace(target)
    return hashlib.sha256(target.read_bytes()).hexdigest()


_IMPORT_CHECK = r"""
import importlib, importlib.abc, sys
allowed = set(sys.argv[2].split(",")) | set(sys.stdlib_module_names)
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top not in allowed:
            raise ModuleNotFoundError(
                f"{fullname!r} is not in the Lambda runtime (only the standard library and boto3 are)", name=fullname)
        return None
sys.meta_path.insert(0, Block())
module, _, func = sys.argv[1].rpartition(".")
handler = getattr(importlib.import_module(module), func)
assert callable(handler), f"{sys.argv[1]} is not callable"
"""


def check_lambda_zip(zip_path: Path, name: str) -> None:
    """Import the handler from the extracted zip with only stdlib + boto3 importable, as on AWS Lambda."""
    with tempfile.TemporaryDirectory(prefix=f"lambda-{name}-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
            own = {n.split("/", 1)[0] for n in zf.namelist()}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update({var: "dummy" for var in LAMBDA_ENV.get(name, ())})
        env.update(
            {
                "FRAUD_THRESHOLD": "0.5",
                "INITIAL_INSTANCE_COUNT": "1",
                "ROLLBACK_ALARM_NAMES": "",
                "FAILURE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
                "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/dummy",
                "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
                "AWS_REGION": env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1")),
            }
        )
        allowed = ",".join(sorted(RUNTIME_PACKAGES | own))
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORT_CHECK, handler_path(name), allowed],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PackagingError(
            f"{zip_path.name}: {handler_path(name)} does not import in a Lambda-like runtime: {last}"
        )


def find_connector_jar(explicit: str | None, repo: Path = REPO) -> Path:
    """The connector jar: --connector-jar, else $FLINK_KINESIS_CONNECTOR_JAR, else the one infra/lib/*.jar."""
    candidate = explicit or os.environ.get("FLINK_KINESIS_CONNECTOR_JAR")
    if candidate:
        jar = Path(candidate).expanduser()
        if not jar.is_file():
            raise PackagingError(f"connector jar {jar} does not exist; {CONNECTOR_HELP}")
    else:
        jars = sorted((repo / "infra" / "lib").glob("*.jar"))
        if not jars:
            raise PackagingError(CONNECTOR_HELP)
        if len(jars) > 1:
            raise PackagingError(
                f"several jars in infra/lib ({', '.join(j.name for j in jars)}): keep one or pass --connector-jar"
            )
        jar = jars[0]
    if not zipfile.is_zipfile(jar):
        raise PackagingError(f"{jar} is not a jar (zip) file - an interrupted download? {CONNECTOR_HELP}")
    with zipfile.ZipFile(jar) as zf:
        names = zf.namelist()
    kinesis_packages = (
        "org/apache/flink/connector/kinesis/",
        "org/apache/flink/streaming/connectors/kinesis/",
    )
    if not any(n.startswith(kinesis_packages) for n in names):
        raise PackagingError(f"{jar} does not contain the Flink Kinesis connector classes; {CONNECTOR_HELP}")
    return jar


def build(
    out: Path,
    *,
    connector_jar: str | None = None,
    operator_jar: str | None = None,
    skip_flink: bool = False,
    import_check: bool = True,
    repo: Path = REPO,
) -> dict[str, str]:
    """Build every zip into `out`; returns {zip file name: sha256}. Writes out/manifest.json too."""
    built: dict[str, str] = {}
    for name in LAMBDAS:
        target = out / f"{name}.zip"
        built[target.name] = write_zip(target, lambda_members(name, repo))
        if import_check:
            check_lambda_zip(target, name)
        print(f"built {target} ({target.stat().st_size:,} bytes)", file=sys.stderr)
    if not skip_flink:
        jar = find_connector_jar(connector_jar, repo)
        operator = find_operator_jar(operator_jar)
        target = out / FLINK_ZIP
        with tempfile.TemporaryDirectory(prefix="flink-app-jar-") as tmp:
            app_jar = application_jar(jar, operator, Path(tmp) / Path(CONNECTOR_IN_ZIP).name)
            built[target.name] = write_zip(target, flink_members(app_jar, repo))
        print(
            f"built {target} ({target.stat().st_size:,} bytes, connector {jar.name} + {operator.name})",
            file=sys.stderr,
        )
    manifest = {
        "artifacts": built,
        "handlers": {n: handler_path(n) for n in LAMBDAS},
        "jarfile": CONNECTOR_IN_ZIP,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return built


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dist", help="output directory (default: dist)")
    parser.add_argument("--connector-jar", help="path of flink-sql-connector-kinesis-*.jar for Flink 1.20")
    parser.add_argument(
        "--operator-jar", help="the Flink job's Java operator jar (default: the one `make install` builds)"
    )
    parser.add_argument("--skip-flink", action="store_true", help="build only the Lambda zips")
    parser.add_argument(
        "--no-import-check", action="store_true", help="skip importing each handler in a Lambda-like runtime"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    try:
        build(
            out,
            connector_jar=args.connector_jar,
            operator_jar=args.operator_jar,
            skip_flink=args.skip_flink,
            import_check=not args.no_import_check,
        )
    except PackagingError as err:
        print(f"package.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
