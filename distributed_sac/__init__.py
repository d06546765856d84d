"""Distributed actor-learner SAC on pybullet Minitaur over one Reverb server."""

import sys
import types

# The pinned stack (pybullet_envs, TF-Agents 0.19) needs gym 0.23, which prints a three-line
# "Gym has been unmaintained" notice to stderr on import, in every role and tool. Our one-line
# errors and progress output would drown in it; an empty notice table keeps gym quiet.
sys.modules.setdefault("gym_notices.notices", types.SimpleNamespace(notices={}))
