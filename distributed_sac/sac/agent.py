"""SAC networks, agent and policy, built from the specs with the tutorial's hyperparameters."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from tf_agents.agents.ddpg import critic_network
from tf_agents.agents.sac import sac_agent, tanh_normal_projection_network
from tf_agents.networks import actor_distribution_network, network
from tf_agents.policies import actor_policy
from tf_agents.trajectories import time_step as ts

import gin
from distributed_sac.errors import UserError


@gin.configurable
def make_actor_network(observation_spec, action_spec, fc_layer_params: Sequence[int] = (256, 256)):
    """Actor: MLP to a tanh-squashed diagonal Normal over actions."""
    return actor_distribution_network.ActorDistributionNetwork(
        observation_spec,
        action_spec,
        fc_layer_params=tuple(fc_layer_params),
        continuous_projection_net=tanh_normal_projection_network.TanhNormalProjectionNetwork,
    )


class NormalizedCriticNetwork(network.Network):
    """Critic Q(s, a) whose hidden layers are Dense, optional dropout, layer normalisation,
    ReLU: the regularised critic of DroQ, which keeps Q in check at many updates per step."""

    def __init__(self, input_tensor_spec, layer_sizes, dropout_rate: float, name="Critic"):
        super().__init__(input_tensor_spec, state_spec=(), name=name)
        self._hidden = []
        for units in layer_sizes:
            self._hidden.append(tf.keras.layers.Dense(units))
            if dropout_rate > 0:
                self._hidden.append(tf.keras.layers.Dropout(dropout_rate))
            self._hidden.append(tf.keras.layers.LayerNormalization())
            self._hidden.append(tf.keras.layers.ReLU())
        self._value = tf.keras.layers.Dense(1)

    def call(self, inputs, step_type=(), network_state=(), training=False):
        observation, action = inputs
        hidden = tf.concat([tf.cast(observation, tf.float32), tf.cast(action, tf.float32)], -1)
        for layer in self._hidden:
            hidden = layer(hidden, training=training)
        return tf.squeeze(self._value(hidden), -1), network_state


@gin.configurable
def make_critic_network(
    observation_spec,
    action_spec,
    joint_fc_layer_params: Sequence[int] = (256, 256),
    kernel_initializer: str = "glorot_uniform",
    layer_norm: bool = False,
    dropout_rate: float = 0.0,
):
    """Critic Q(s, a): observation and action concatenated into one MLP (with layer_norm,
    normalised hidden layers and `dropout_rate`)."""
    if layer_norm:
        return NormalizedCriticNetwork(
            (observation_spec, action_spec), tuple(joint_fc_layer_params), dropout_rate
        )
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
    learning_rate_decay_steps: int | None = None,
    final_learning_rate_fraction: float = 0.1,
) -> sac_agent.SacAgent:
    """The learner's SacAgent; call inside the distribution strategy's scope.

    target_entropy: the policy entropy the temperature is tuned towards; None: TF-Agents'
    default, -dim(action) / 2 (-4 for Minitaur).
    learning_rate_decay_steps: None keeps the three learning rates constant; a number of train
    steps makes each fall linearly to final_learning_rate_fraction of itself by then and stay
    there (each optimizer counts its own steps, one per train step, in the checkpoint).
    """

    def optimizer(learning_rate: float) -> tf.keras.optimizers.Optimizer:
        if learning_rate_decay_steps is not None:
            learning_rate = tf.keras.optimizers.schedules.PolynomialDecay(
                learning_rate,
                learning_rate_decay_steps,
                learning_rate * final_learning_rate_fraction,
                power=1.0,
            )
        return tf.keras.optimizers.Adam(learning_rate=learning_rate)

    observation_spec = time_step_spec.observation
    agent = sac_agent.SacAgent(
        time_step_spec,
        action_spec,
        actor_network=make_actor_network(observation_spec, action_spec),
        critic_network=make_critic_network(observation_spec, action_spec),
        actor_optimizer=optimizer(actor_learning_rate),
        critic_optimizer=optimizer(critic_learning_rate),
        alpha_optimizer=optimizer(alpha_learning_rate),
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


def check_bindings() -> None:
    """A one-line UserError for network and agent values gin bound that no agent can use;
    config.load_gin calls it, so the launcher refuses them before any role starts."""
    critic = gin.get_bindings("make_critic_network")
    if critic.get("dropout_rate") and not critic.get("layer_norm"):
        raise UserError("make_critic_network.dropout_rate needs make_critic_network.layer_norm")
    agent = gin.get_bindings("make_agent")
    decay_steps = agent.get("learning_rate_decay_steps")
    if decay_steps is not None and not (isinstance(decay_steps, int) and decay_steps >= 1):
        raise UserError(
            f"make_agent.learning_rate_decay_steps must be None or an integer of at least 1, "
            f"got {decay_steps!r}"
        )
    fraction = agent.get("final_learning_rate_fraction", 0.1)
    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise UserError(
            f"make_agent.final_learning_rate_fraction must be from 0 to 1, got {fraction!r}"
        )


def discount_factor(agent: sac_agent.SacAgent) -> float:
    """The agent's gamma (SacAgent keeps it private)."""
    return float(agent._gamma)


def policy_summaries(agent: sac_agent.SacAgent, train_step: tf.Variable, summary_interval: int):
    """A TF-Agents Learner's after-train-step hook writing SAC's alpha and the policy's entropy
    (on the batch just trained on) every `summary_interval` steps; TF-Agents writes only the
    three losses."""

    def write(experience):
        first = tf.nest.map_structure(lambda t: t[:, 0], experience)
        time_steps = ts.TimeStep(first.step_type, first.reward, first.discount, first.observation)
        # SacAgent has no public accessors for these; TF-Agents is pinned (0.19).
        _, log_pi = agent._actions_and_log_probs(time_steps, training=False)
        with tf.compat.v1.name_scope(None):  # tags without the loop's "while/cond/" scope
            tf.summary.scalar("Policy/alpha", tf.exp(agent._log_alpha), step=train_step)
            tf.summary.scalar("Policy/entropy", -tf.reduce_mean(log_pi), step=train_step)
        return tf.constant(True)

    def after_step(experience_and_info, _loss_info):
        if summary_interval <= 0:
            return
        experience, _ = experience_and_info
        tf.cond(
            tf.equal(train_step % summary_interval, 0),
            lambda: write(experience),
            lambda: tf.constant(False),
        )

    return after_step


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
