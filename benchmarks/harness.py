"""What the benchmarks share: parts run in fresh processes, machine facts, config checks."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MINITAUR_GIN = os.path.join(REPO, "gin", "minitaur.gin")
SMOKE_GIN = os.path.join(REPO, "gin", "smoke.gin")
RESULT_PREFIX = "RESULT "


def fail(program: str, message: str):
    """Stops the benchmark with one line on stderr and exit code 1."""
    raise SystemExit(f"{program}: error: {message}")


def gin_args(gin_file: str, bindings, flag: str = "--gin_bindings") -> list[str]:
    args = ["--gin_file", gin_file]
    for binding in bindings:
        args += [flag, binding]
    return args


def load_config(gin_file: str, bindings=()):
    from distributed_sac.config import load_gin

    return load_gin([gin_file], list(bindings))


def check_config(program: str, gin_file: str, bindings) -> None:
    """A missing gin file or bad binding stops the benchmark in one line, before any work."""
    if not os.path.isfile(gin_file):
        fail(program, f"gin file not found: {gin_file}")
    from distributed_sac.config import UserError

    try:
        load_config(gin_file, bindings)
    except UserError as error:
        fail(program, str(error))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_part(program: str, script: str, part: str, log_path: str | None = None, **kwargs) -> dict:
    """Runs `script --part part` in a fresh Python process and returns the figures it prints
    (so no part inherits another's threads, memory or TensorFlow state). Its stderr goes to
    `log_path` when given."""
    command = [sys.executable, script, "--part", part, "--part_args", json.dumps(kwargs)]
    if log_path is None:
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        stderr = result.stderr
    else:
        with open(log_path, "w") as log:
            result = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO
            )
        with open(log_path, errors="replace") as log:
            stderr = log.read()
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if result.returncode != 0 or not lines:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        fail(program, f"part {part} failed (exit {result.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def serve_part(parts: dict, part: str, part_args: str) -> None:
    """In the child process: runs one part and prints its figures for `run_part`."""
    print(RESULT_PREFIX + json.dumps(parts[part](**json.loads(part_args))), flush=True)


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}
