"""The run directory layout that README documents and every role, tool and test uses."""

from __future__ import annotations

from tf_agents.train import learner

from distributed_sac import layout
from distributed_sac.layout import RunDir


def test_run_dir_layout_is_the_documented_one():
    run = RunDir("/r")
    assert run.operative_config == "/r/operative_config.gin"
    assert run.logs == "/r/logs"
    assert run.log("learner") == "/r/logs/learner.log"
    assert run.checkpoints == "/r/checkpoints"
    assert run.train == "/r/train"
    assert run.policies == "/r/policies"
    assert run.greedy_policy == "/r/policies/greedy_policy"
    assert run.collect_policy == "/r/policies/collect_policy"
    assert run.best_greedy_policy == "/r/policies/best_greedy_policy"
    assert run.collect(3) == "/r/collect/3"
    assert run.eval == "/r/eval"
    assert run.metrics == "/r/eval/metrics.jsonl"
    assert run.reverb == "/r/reverb"
    assert run.reverb_signatures == "/r/reverb_signatures.json"
    assert run.run_lock == "/r/run.lock"
    assert run.replay == "/r/replay"
    # The learner hands root_dir to TF-Agents' Learner, which writes these two itself.
    assert layout.TRAIN == learner.TRAIN_DIR
    assert layout.POLICIES == learner.POLICY_SAVED_MODEL_DIR
