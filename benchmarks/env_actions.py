"""How Minitaur's step cost depends on the actions: steps/s and CPU ms per step under several
fixed action patterns (the env limit uses uniform random actions; a learning policy does not).

    .venv/bin/python benchmarks/env_actions.py [--seconds 6] [--gin_file gin/minitaur_tutorial.gin]
"""

from __future__ import annotations

import argparse
import time

import harness
import numpy as np

PATTERNS = {
    "uniform random": lambda rng, n: rng.uniform(-1.0, 1.0, n),
    "random signs (+-1)": lambda rng, n: rng.choice([-1.0, 1.0], n),
    "all +1": lambda rng, n: np.ones(n),
    "all 0": lambda rng, n: np.zeros(n),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_gin_arguments(parser)
    parser.add_argument("--seconds", type=float, default=6.0, help="per pattern")
    args = parser.parse_args()
    harness.check_config("env_actions", args.gin_file, args.gin_bindings)
    from distributed_sac.builder import Builder

    env = Builder(harness.load_config(args.gin_file, args.gin_bindings)).make_env(seed=0)
    size = int(np.prod(env.action_spec().shape))
    rng = np.random.default_rng(0)
    print(f"{'actions':<20} {'steps/s':>8} {'CPU ms/step':>12} {'episodes ended':>15}")
    for name, pattern in PATTERNS.items():
        env.reset()
        steps = ended = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < args.seconds:
            ended += int(env.step(pattern(rng, size).astype(np.float32)).is_last())
            steps += 1
        rate = steps / (time.perf_counter() - start)
        cpu_ms = (time.process_time() - cpu_start) / steps * 1000
        print(f"{name:<20} {rate:8.1f} {cpu_ms:12.2f} {ended:15d}")


if __name__ == "__main__":
    main()
