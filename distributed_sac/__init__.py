"""Distributed actor-learner SAC on pybullet Minitaur over one Reverb server."""

import os
import sys
import types

# TensorFlow's C++ start-up lines (CUDA plugin registration, oneDNN notices) would bury a
# command's one-line error and the roles' own logs. Set here, before any module of the package
# imports TensorFlow, so every role and tool gets it, and so do the processes they start, which
# inherit it; a value set by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The pinned stack (pybullet_envs, TF-Agents 0.19) needs gym 0.23, which prints a three-line
# "Gym has been unmaintained" notice to stderr on import, in every role and tool. Our one-line
# errors and progress output would drown in it; an empty notice table keeps gym quiet.
sys.modules.setdefault("gym_notices.notices", types.SimpleNamespace(notices={}))
