"""What the learner is made of: the parts Builder.make_learner makes, and the ones bound to its
replay server connection (remade after a lost server)."""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from tf_agents.agents.sac import sac_agent
from tf_agents.train import learner as tfa_learner

from distributed_sac.learner.replay import LearnerReplay
from distributed_sac.replay.feed import FeedReader
from distributed_sac.replay.weights import WeightClient


@dataclasses.dataclass(frozen=True)
class LearnerParts:
    """The agent, its train step, and TF-Agents' Learner training it on batches from `replay`."""

    agent: sac_agent.SacAgent
    train_step: tf.Variable
    learner: tfa_learner.Learner
    replay: LearnerReplay


@dataclasses.dataclass(frozen=True)
class ServerParts:
    """The learner's clients of the replay server: it pushes weights and drains the feed."""

    weights: WeightClient
    feed: FeedReader
