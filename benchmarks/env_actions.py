"""How Minitaur's step cost depends on the actions: steps/s and CPU ms per step under several
fixed action patterns (the env limit uses uniform random actions; a learning policy does not).

    .venv/bin/python -m benchmarks.env_actions [--seconds 6] [--gin_file gin/minitaur_tutorial.gin]
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness

PROGRAM = "env_actions"
PATTERNS = {
    "uniform random": lambda rng, n: rng.uniform(-1.0, 1.0, n),
    "random signs (+-1)": lambda rng, n: rng.choice([-1.0, 1.0], n),
    "all +1": lambda rng, n: np.ones(n),
    "all 0": lambda rng, n: np.zeros(n),
}


def main() -> None:
    parser = harness.Parser(PROGRAM, __doc__, output=False)
    parser.add_argument("--seconds", type=float, default=6.0, help="per pattern")
    args = parser.parse()
    from distributed_sac.builder import Builder

    env = Builder(args.config).make_env(seed=0)
    size = int(np.prod(env.action_spec().shape))
    rng = np.random.default_rng(0)
    rows = []
    for name, pattern in PATTERNS.items():
        env.reset()
        ended = []

        def step(pattern=pattern, ended=ended):
            ended.append(env.step(pattern(rng, size).astype(np.float32)).is_last())

        rate, cpu_s = harness.steps_per_s(step, args.seconds)
        rows.append((name, rate, cpu_s * 1000, sum(ended)))
    harness.print_table(rows, ("actions", "steps/s", "CPU ms/step", "episodes ended"))


if __name__ == "__main__":
    main()
