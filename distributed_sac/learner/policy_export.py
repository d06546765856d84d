"""Policies as standalone SavedModels under <root_dir>/policies/, each published without a gap.

`publish_dir` is the one way a policy directory is replaced: the new SavedModel is written to a
versioned directory beside it and synced to disk, then the name (a relative symlink) is switched
to it by one `os.replace`, so a reader always finds a complete policy under the name, before and
after, also when the writer is killed halfway or the machine loses power. The version the name
pointed at before stays until the next replacement, so a reader that resolved the name (`cp -rL`,
`load_policy`) can finish reading it. `greedy_policy/` and `collect_policy/` are the learner's
newest weights; `best_greedy_policy/` is kept by the evaluator (acting/best_policy.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from tf_agents.policies import greedy_policy, policy_saver, py_tf_eager_policy

from distributed_sac.errors import DiskFull, UserError, first_line, is_disk_full
from distributed_sac.layout import COLLECT_POLICY, GREEDY_POLICY, RunDir

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

    The new version's files and directories are fsynced before the switch and the parent
    directory after it, so after a crash the name points at a complete version. If writing
    fails (a full disk: DiskFull), what was written is removed and `final` still names the
    previous version. Afterwards the previous version is kept (a reader may have resolved the
    name to it) and older ones, or one a killed writer left half written, are removed. A `final`
    that is a plain directory (runs written before this scheme) is moved to a version first.
    """
    parent, name = os.path.split(final)
    parent = parent or "."
    os.makedirs(parent, exist_ok=True)
    versions = published_versions(final)
    number = 1 + max((int(v.rsplit(VERSION_MARK, 1)[1]) for v in versions), default=0)
    previous = os.readlink(final) if os.path.islink(final) else None
    if os.path.isdir(final) and not os.path.islink(final):
        previous = f"{name}{VERSION_MARK}{number}"
        os.replace(final, os.path.join(parent, previous))
        number += 1
    target = f"{final}{VERSION_MARK}{number}"
    link = f"{final}.link"
    try:
        write(target)
        sync_tree(target)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.basename(target), link)
        sync_path(parent)  # the new version's entry and the link's, before the switch
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
    sync_path(parent)
    kept = {os.path.basename(target), previous}
    for stale in published_versions(final):
        if os.path.basename(stale) not in kept:
            shutil.rmtree(stale, ignore_errors=True)


def sync_path(path: str) -> None:
    """fsync of one file or directory (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: str) -> None:
    """fsync of every file and directory under `root`, each directory after its contents."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            sync_path(os.path.join(directory, name))
        sync_path(directory)


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


def check_policy_dir(policy_dir: str) -> None:
    """UserError unless `policy_dir` holds a SavedModel (cheap: nothing is loaded)."""
    if not os.path.exists(policy_dir):
        raise UserError(f"policy_dir not found: {policy_dir}")
    if not os.path.isdir(policy_dir):
        raise UserError(f"policy_dir is not a directory: {policy_dir}")
    if not any(
        os.path.isfile(os.path.join(policy_dir, name))
        for name in ("saved_model.pb", "saved_model.pbtxt")
    ):
        hint = ""
        if os.path.isdir(RunDir(policy_dir).policies):
            hint = f"; this looks like a root_dir: try --root_dir {policy_dir}"
        raise UserError(f"{policy_dir} is not a SavedModel policy (no saved_model.pb){hint}")


def load_policy(policy_dir: str) -> py_tf_eager_policy.SavedModelPyTFEagerPolicy:
    """The policy SavedModel in `policy_dir` as a py policy (numpy time steps in, numpy actions
    out), its specs read from the policy_specs.pbtxt PolicySaver writes beside it; UserError
    when it is not one."""
    check_policy_dir(policy_dir)
    if not os.path.isfile(os.path.join(policy_dir, policy_saver.POLICY_SPECS_PBTXT)):
        raise UserError(
            f"{policy_dir} is a SavedModel but not a TF-Agents policy "
            f"(no {policy_saver.POLICY_SPECS_PBTXT})"
        )
    try:
        # Resolved once: TF opens the SavedModel's files one by one, and a policy published
        # meanwhile switches the name to another version. The resolved one is kept until the
        # next replacement (publish_dir).
        return py_tf_eager_policy.SavedModelPyTFEagerPolicy(
            os.path.realpath(policy_dir), load_specs_from_pbtxt=True
        )
    except Exception as error:  # a damaged SavedModel raises anything from OSError to TF's own
        raise UserError(f"cannot load the policy in {policy_dir}: {first_line(error)}") from None
