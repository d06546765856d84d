"""The learner's tf.distribute strategy: default (one device), mirrored (GPUs or CPUs), TPU."""

from __future__ import annotations

import tensorflow as tf

from distributed_sac.errors import UserError

STRATEGIES = ("cpu", "mirrored", "tpu")


def make_strategy(name: str, tpu_address: str | None = None, cpu_devices: int = 2):
    """Call before TensorFlow runs its first op: `mirrored` without GPUs splits the CPU into
    `cpu_devices` logical devices, which only works before the runtime starts."""
    if name == "cpu":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()  # every visible GPU
        if cpu_devices < 1:
            raise UserError(f"--mirrored_cpu_devices must be at least 1, got {cpu_devices}")
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices
        )
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "tpu":
        if not tpu_address:
            raise UserError("--strategy tpu needs --tpu ADDRESS")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
