"""Build and locate the jar of the job's Java operator (streaming/java/fraud/streaming/*.java).

    python streaming/operator_jar.py [OUT.jar]      # `make install` runs this (idempotent via make)

The per-card operator (`fraud.streaming.CardFeatures`: parsing, validation and the keyed rules) is
Java so that no record crosses into Python (docs/streaming.md "Latency and throughput"). It is
compiled with `javac --release 11` (Managed Service for Apache Flink 1.20 runs Java 11) against
PyFlink's own Flink jars (flink-dist carries the shaded Jackson the operator reads JSON with), and
written as a deterministic jar (sorted entries, fixed timestamps), so infra/package.py can merge it
into the one jar a Managed Flink Python application ships. No PyFlink import here (the main venv
runs it too).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
JAVA_DIR = REPO_ROOT / "streaming" / "java"
JAR_NAME = "fraud-streaming-operator.jar"
DEFAULT_JAR = REPO_ROOT / ".venv-flink" / "share" / JAR_NAME
"""Where `make install` puts the jar (inside the Flink venv: built per machine, not committed)."""
OPERATOR_CLASS = "fraud.streaming.CardFeatures"
JAVA_RELEASE = "11"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MANIFEST = "Manifest-Version: 1.0\r\nCreated-By: streaming/operator_jar.py\r\n\r\n"


class BuildError(RuntimeError):
    """javac missing or failing, or the Flink jars not installed: one clear message."""


def java_sources(java_dir: Path = JAVA_DIR) -> list[Path]:
    return sorted(java_dir.rglob("*.java"))


def flink_lib(repo: Path = REPO_ROOT) -> Path:
    """PyFlink's lib/ (flink-dist and friends) in the Flink venv."""
    found = sorted((repo / ".venv-flink" / "lib").glob("python*/site-packages/pyflink/lib"))
    if not found:
        raise BuildError("PyFlink is not installed in .venv-flink: run `make install` first")
    return found[-1]


def build(out: Path = DEFAULT_JAR, java_dir: Path = JAVA_DIR, lib: Path | None = None) -> Path:
    """Compile the operator's sources and write `out` (deterministic bytes for the same sources)."""
    javac = shutil.which("javac")
    if javac is None:
        raise BuildError(
            "javac not found: the Flink job's operator is Java and needs a JDK 17 to build "
            "(Debian/Ubuntu: 'sudo apt-get install -y openjdk-17-jdk-headless'; macOS: 'brew install openjdk@17')"
        )
    sources = java_sources(java_dir)
    if not sources:
        raise BuildError(f"no Java sources under {java_dir}")
    classpath = str((lib or flink_lib()) / "*")
    with tempfile.TemporaryDirectory(prefix="operator-jar-") as tmp:
        classes = Path(tmp)
        cmd = [javac, "--release", JAVA_RELEASE, "-encoding", "UTF-8", "-nowarn", "-d", str(classes)]
        proc = subprocess.run(
            [*cmd, "-cp", classpath, *map(str, sources)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise BuildError(f"javac failed:\n{proc.stdout}{proc.stderr}".rstrip())
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in [("META-INF/MANIFEST.MF", MANIFEST.encode()), *class_entries(classes)]:
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
        partial.replace(out)
    return out


def class_entries(classes: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(classes).as_posix(), p.read_bytes()) for p in sorted(classes.rglob("*.class"))]


def jar_classes(jar: Path) -> list[tuple[str, bytes]]:
    """The operator jar's class entries (what infra/package.py merges into the application jar)."""
    with zipfile.ZipFile(jar) as zf:
        return [(n, zf.read(n)) for n in sorted(zf.namelist()) if n.endswith(".class")]


def find_jar(path: str | Path | None = None) -> Path:
    """The built jar: `path`, else the default; a clear error when it was never built or is stale."""
    jar = Path(path) if path else DEFAULT_JAR
    if not jar.is_file():
        raise BuildError(
            f"the Flink operator jar {jar} is missing: run `make install` (it compiles streaming/java)"
        )
    newest = max((p.stat().st_mtime for p in java_sources()), default=0.0)
    if path is None and newest > jar.stat().st_mtime:
        raise BuildError(f"{jar} is older than streaming/java: run `make install` to rebuild it")
    return jar


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        out = build(Path(args[0]) if args else DEFAULT_JAR)
    except BuildError as exc:
        print(f"operator_jar.py: {exc}", file=sys.stderr)
        return 1
    print(f"built {out} ({out.stat().st_size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
