"""SAC networks, agent and policy, built from the specs with the tutorial's hyperparameters."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from tf_agents.agents.ddpg import critic_network
from tf_agents.agents.sac import sac_agent, tanh_normal_projection_network
from tf_agents.networks import actor_distribution_network
from tf_agents.policies import actor_policy

import gin


@gin.configurable
def make_actor_network(observation_spec, action_spec, fc_layer_params: Sequence[int] = (256, 256)):
    """Actor: MLP to a tanh-squashed diagonal Normal over actions."""
    return actor_distribution_network.ActorDistributionNetwork(
        observation_spec,
        action_spec,
        fc_layer_params=tuple(fc_layer_params),
        continuous_projection_net=tanh_normal_projection_network.TanhNormalProjectionNetwork,
    )


@gin.configurable
def make_critic_network(
    observation_spec,
    action_spec,
    joint_fc_layer_params: Sequence[int] = (256, 256),
    kernel_initializer: str = "glorot_uniform",
):
    """Critic Q(s, a): observation and action concatenated into one MLP."""
    return critic_network.CriticNetwork(
        (observation_spec, action_spec),
        observation_fc_layer_params=None,
        action_fc_layer_params=None,
        joint_fc_layer_params=tuple(joint_fc_layer_params),
        kernel_initializer=kernel_initializer,
        last_kernel_initializer=kernel_initializer,
    )


@gin.configurable
def make_agent(
    time_step_spec,
    action_spec,
    train_step: tf.Variable,
    actor_learning_rate: float = 3e-4,
    critic_learning_rate: float = 3e-4,
    alpha_learning_rate: float = 3e-4,
    target_update_tau: float = 0.005,
    target_update_period: int = 1,
    gamma: float = 0.99,
    reward_scale_factor: float = 1.0,
    target_entropy: float | None = None,
) -> sac_agent.SacAgent:
    """The learner's SacAgent; call inside the distribution strategy's scope.

    target_entropy: the policy entropy the temperature is tuned towards; None: TF-Agents'
    default, -dim(action) / 2 (-4 for Minitaur).
    """
    observation_spec = time_step_spec.observation
    agent = sac_agent.SacAgent(
        time_step_spec,
        action_spec,
        actor_network=make_actor_network(observation_spec, action_spec),
        critic_network=make_critic_network(observation_spec, action_spec),
        actor_optimizer=tf.keras.optimizers.Adam(learning_rate=actor_learning_rate),
        critic_optimizer=tf.keras.optimizers.Adam(learning_rate=critic_learning_rate),
        alpha_optimizer=tf.keras.optimizers.Adam(learning_rate=alpha_learning_rate),
        target_update_tau=target_update_tau,
        target_update_period=target_update_period,
        td_errors_loss_fn=tf.math.squared_difference,
        gamma=gamma,
        reward_scale_factor=reward_scale_factor,
        target_entropy=target_entropy,
        train_step_counter=train_step,
    )
    agent.initialize()
    return agent


def make_policy(time_step_spec, action_spec) -> actor_policy.ActorPolicy:
    """The stochastic policy the agent trains, built without the agent.

    Collectors and the evaluator use it: its variables have the same order and shapes as the
    learner's `agent.collect_policy.variables()`, so pulled weights fit.
    """
    return actor_policy.ActorPolicy(
        time_step_spec,
        action_spec,
        actor_network=make_actor_network(time_step_spec.observation, action_spec),
        training=False,
    )
