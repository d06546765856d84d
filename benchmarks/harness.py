"""What the benchmarks share: parts run in fresh processes, machine facts, config checks."""

from __future__ import annotations

import json
import os
import platform
import socket
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


def add_gin_arguments(parser) -> None:
    """--gin_file and --gin_bindings (repeatable; --gin_binding too), as the roles spell them."""
    parser.add_argument("--gin_file", default=MINITAUR_GIN)
    parser.add_argument("--gin_bindings", "--gin_binding", action="append", default=[])


def gin_args(gin_file: str, bindings) -> list[str]:
    """The flags that give a role or the launcher this config."""
    args = ["--gin_file", gin_file]
    for binding in bindings:
        args += ["--gin_bindings", binding]
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


def run_part(program: str, script: str, part: str, log_path: str, **kwargs) -> dict:
    """Runs `script --part part` in a fresh Python process (so no part inherits another's
    threads, memory or TensorFlow state), its output in `log_path`; returns the figures it
    printed."""
    from distributed_sac.processes import Process

    command = [sys.executable, script, "--part", part, "--part_args", json.dumps(kwargs)]
    process = Process(command, log_path, name=part)
    code = process.wait()
    output = process.output()
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if code != 0 or not lines:
        tail = "\n".join(output.strip().splitlines()[-5:])
        fail(program, f"part {part} failed (exit {code}):\n{tail}")
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
