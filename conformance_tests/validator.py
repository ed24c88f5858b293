"""The offline FHIR R4 validator (HAPI, Java) seen from Python.

``build()`` compiles the Maven project in ``validator/`` once (skipped while pom.xml and the
sources are unchanged); ``Validator`` keeps one JVM running and validates resources through it,
one JSON line in, one JSON line out, since the JVM's start and first validation take seconds.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

PROJECT = Path(__file__).resolve().parent / "validator"
TARGET = PROJECT / "target"  # git-ignored (validator/.gitignore)
STAMP = TARGET / "source.sha256"
CLASSPATH = TARGET / "classpath.txt"
MAIN_CLASS = "fhirvalidator.Main"
BUILD_TIMEOUT = 1800.0  # a cold build downloads ~190 MB of jars into ~/.m2
START_TIMEOUT = 300.0
VALIDATE_TIMEOUT = 300.0  # the first validation loads the whole R4 core


class ValidatorError(RuntimeError):
    """Java or Maven missing, the build failed, or the validator process died."""


@dataclass(frozen=True)
class Issue:
    severity: str  # fatal, error, warning, information
    location: str
    message: str


@dataclass(frozen=True)
class Result:
    errors: int
    warnings: int
    issues: list[Issue] = field(default_factory=list)

    def of(self, *severities: str) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity in severities]

    @property
    def crashed(self) -> bool:
        """The validator itself failed (a JDK exception such as a NullPointerException, i.e. a bug of
        the validator, not HAPI rejecting the input): the resource was not checked."""
        return any(i.severity == "fatal" and i.message.startswith("validator exception: java.") for i in self.issues)


def _tool(name: str) -> str:
    home = os.environ.get("JAVA_HOME") if name == "java" else None
    if home and (Path(home) / "bin" / name).is_file():
        return str(Path(home) / "bin" / name)
    found = shutil.which(name)
    if not found:
        raise ValidatorError(f"`{name}` not found on PATH: the FHIR validator needs Java 17+ and Maven 3")
    return found


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in [PROJECT / "pom.xml", *sorted((PROJECT / "src").rglob("*"))]:
        if path.is_file():
            digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _classpath() -> str | None:
    """The runtime classpath of the last build, or None when it is missing or its jars are gone."""
    if not CLASSPATH.is_file() or not (TARGET / "classes").is_dir():
        return None
    jars = CLASSPATH.read_text().strip().split(os.pathsep)
    if not all(Path(jar).is_file() for jar in jars):
        return None  # e.g. ~/.m2 was emptied since
    return os.pathsep.join([str(TARGET / "classes"), *jars])


def build() -> str:
    """Builds the validator unless up to date; returns the classpath to run it with."""
    _tool("java")
    TARGET.mkdir(exist_ok=True)
    with open(TARGET / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions at once must not run Maven on one target/
        return _build()


def _build() -> str:
    wanted = _source_hash()
    classpath = _classpath()
    if classpath and STAMP.is_file() and STAMP.read_text().strip() == wanted:
        return classpath
    mvn = _tool("mvn")
    try:
        done = subprocess.run([mvn, "-B", "-q", "-Dstyle.color=never", "package"], cwd=PROJECT, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise ValidatorError(f"Maven build of {PROJECT} took more than {BUILD_TIMEOUT:.0f} s") from e
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise ValidatorError(f"Maven build of {PROJECT} failed (exit {done.returncode}):\n{tail}")
    classpath = _classpath()
    if not classpath:
        raise ValidatorError(f"Maven build of {PROJECT} left no {CLASSPATH.name}")
    STAMP.write_text(wanted + "\n")
    return classpath


class Validator:
    """One validator JVM with the R4 core plus the conformance resources (StructureDefinitions,
    ValueSets, CodeSystems) found in ``profiles``: directories of *.json files, or JSON files
    (a resource or a Bundle of them)."""

    def __init__(self, *profiles: str | Path) -> None:
        self.profiles = [Path(p) for p in profiles]
        self.loaded = 0  # conformance resources the JVM loaded from ``profiles``
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: IO[str] | None = None

    def __enter__(self) -> Validator:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        classpath = build()
        # stderr (HAPI's logging) goes to a file: a pipe nobody reads could fill and block the JVM.
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._process = subprocess.Popen(
            [_tool("java"), "-Xmx2g", "-XX:+UseSerialGC",  # bounded: the JVM would take a quarter of the RAM
             "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath, MAIN_CLASS,
             *map(str, self.profiles)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, encoding="utf-8",
            bufsize=1)
        # A reader thread lets every wait have a timeout (a bare readline could block forever).
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True).start()
        ready = json.loads(self._next_line(START_TIMEOUT))
        if not ready.get("ready"):
            raise ValidatorError(f"unexpected first line from the validator: {ready}")
        self.loaded = int(ready["loaded"])

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ValidatorError(f"validator gave no answer in {timeout:.0f} s{self._stderr_tail()}") from None
        if line is None:
            raise ValidatorError(f"validator process ended{self._stderr_tail()}")
        return line

    def _stderr_tail(self) -> str:
        if not self._stderr:
            return ""
        self._stderr.seek(0)
        return ":\n" + "\n".join(self._stderr.read().splitlines()[-30:])

    def validate(self, resource: dict[str, Any]) -> Result:
        if not self._process or not self._process.stdin:
            raise ValidatorError("validator not started (use it as a context manager)")
        # json.dumps escapes newlines inside strings, so the resource is exactly one line.
        try:
            self._process.stdin.write(json.dumps(resource, ensure_ascii=False) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError as e:
            raise ValidatorError(f"validator process ended{self._stderr_tail()}") from e
        answer = json.loads(self._next_line(VALIDATE_TIMEOUT))
        return Result(errors=answer["errors"], warnings=answer["warnings"],
                      issues=[Issue(i["severity"], i["location"], i["message"]) for i in answer["issues"]])

    def close(self) -> None:
        process, self._process = self._process, None
        if process:
            if process.stdin:
                process.stdin.close()  # end of input: the JVM exits by itself
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stderr:
            self._stderr.close()
            self._stderr = None
