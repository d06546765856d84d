"""Policies as standalone SavedModels under <root_dir>/policies/, each published without a gap.

`publish_dir` is the one way a policy directory is replaced: the new SavedModel is written to a
versioned directory beside it, then the name (a relative symlink) is switched to it by one
`os.replace`, so a reader always finds a complete policy under the name, before and after,
also when the writer is killed halfway. `greedy_policy/` and `collect_policy/` are the learner's
newest weights; `best_greedy_policy/` is kept by the evaluator (best_policy.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from tf_agents.policies import greedy_policy, policy_saver

from distributed_sac.errors import DiskFull, is_disk_full
from distributed_sac.layout import COLLECT_POLICY, GREEDY_POLICY

VERSION_MARK = ".v"  # <name>.v<n>: the directories a published name points at


def published_versions(final: str) -> list[str]:
    """The version directories of `final` on disk, oldest first."""
    parent, name = os.path.split(final)
    prefix = name + VERSION_MARK
    numbered = []
    for entry in os.listdir(parent or "."):
        if entry.startswith(prefix) and entry[len(prefix) :].isdigit():
            numbered.append((int(entry[len(prefix) :]), os.path.join(parent, entry)))
    return [path for _, path in sorted(numbered)]


def publish_dir(final: str, write: Callable[[str], None]) -> None:
    """Calls `write(directory)` on a fresh directory, then makes `final` name it atomically.

    If writing fails (a full disk: DiskFull), what was written is removed and `final` still
    names the previous version. Versions that no longer have the name (an older one, or one a
    killed writer left half written) are removed afterwards. A `final` that is a plain
    directory (runs written before this scheme) is moved to a version first.
    """
    parent, name = os.path.split(final)
    os.makedirs(parent, exist_ok=True)
    versions = published_versions(final)
    number = 1 + max((int(v.rsplit(VERSION_MARK, 1)[1]) for v in versions), default=0)
    if os.path.isdir(final) and not os.path.islink(final):
        os.replace(final, f"{final}{VERSION_MARK}{number}")
        number += 1
    target = f"{final}{VERSION_MARK}{number}"
    link = f"{final}.link"
    try:
        write(target)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.basename(target), link)
    except BaseException as error:
        # The name still points at the last complete version.
        shutil.rmtree(target, ignore_errors=True)
        if os.path.lexists(link):
            os.remove(link)
        if is_disk_full(error):
            raise DiskFull(
                f"no space left on device writing {target}; {final} is still the previous "
                "policy: free space, then start the run again"
            ) from None
        raise
    os.replace(link, final)
    for stale in published_versions(final):
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)


class PolicyExporter:
    """Writes greedy and collect policies with their current weights, replacing older exports."""

    def __init__(self, policies_dir: str, collect_policy, train_step):
        self._policies_dir = policies_dir
        self._train_step = train_step
        self.exported_at: int | None = None  # the train step of this process's last export
        self._savers = {
            GREEDY_POLICY: policy_saver.PolicySaver(
                greedy_policy.GreedyPolicy(collect_policy), train_step=train_step
            ),
            COLLECT_POLICY: policy_saver.PolicySaver(collect_policy, train_step=train_step),
        }

    def export(self) -> None:
        for name, saver in self._savers.items():
            publish_dir(os.path.join(self._policies_dir, name), saver.save)
        self.exported_at = int(self._train_step.numpy())
