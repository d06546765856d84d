"""The four roles: replay_server, learner, collector, evaluator; each a `python -m` module."""

import os

# numpy's OpenBLAS splits even a 256 x 256 matrix-vector product across every core and waits
# for its threads: on the 2-core test machine with the cores busy, the actor MLP's three
# products took 2.3 ms per call instead of 14 us on one thread. Roles run one small product at
# a time (TensorFlow's own thread pools are not OpenBLAS's), so one thread each. Set before
# any role imports numpy; a value set by the user wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
