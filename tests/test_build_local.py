"""docker/build_local.sh runs podman as root with the configuration, storage and base image of one
directory: it uses only a directory it made itself (mode 0700) or one that is as private, under
directories nobody else may replace. A directory another user planted, a symlink, or a path
others may write is refused with one line before podman runs. `--print-env` makes the same
check without building, so these tests take a second; test_container.py builds for real."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from distributed_sac.runtime.processes import run_bounded
from tests.conftest import REPO_ROOT, one_error_line
from tests.podman import needs_root

BUILD_LOCAL = os.path.join(REPO_ROOT, "docker", "build_local.sh")
SHARED_DEFAULT = "/var/tmp/distributed_sac-podman"  # the fixed directory it used to take as-is
NOBODY = 65534


def print_env(podman_dir=None, prefix=(), script=BUILD_LOCAL):
    env = {key: value for key, value in os.environ.items() if key != "DISTRIBUTED_SAC_PODMAN_DIR"}
    if podman_dir is not None:
        env["DISTRIBUTED_SAC_PODMAN_DIR"] = str(podman_dir)
    return run_bounded([*prefix, script, "--print-env"], timeout_s=60, env=env)


def exported_dir(result) -> str:
    """The one directory whose files --print-env points podman at."""
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    exports = dict(item.split("=", 1) for item in line.split()[1:])
    assert set(exports) == {"CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"}
    (directory,) = {os.path.dirname(path) for path in exports.values()}
    return directory


def refusal(result) -> str:
    return one_error_line(result, "build_local.sh").split(": ", 2)[2]


def assert_private(path: str) -> None:
    status = os.lstat(path)
    assert stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid()
    assert stat.S_IMODE(status.st_mode) == 0o700


def test_it_makes_its_directory_private_and_uses_it_again(tmp_path):
    podman_dir = tmp_path / "podman"
    assert exported_dir(print_env(podman_dir)) == str(podman_dir)
    assert_private(podman_dir)
    assert exported_dir(print_env(podman_dir)) == str(podman_dir)


def test_the_default_is_the_users_own_not_the_shared_path():
    default = exported_dir(print_env())
    assert default == f"{SHARED_DEFAULT}-{os.geteuid()}"
    assert_private(default)


@needs_root
def test_a_directory_another_user_planted_is_refused(tmp_path):
    planted = tmp_path / "podman"
    planted.mkdir(mode=0o700)
    (planted / "containers.conf").write_text('[engine]\nruntime = "/tmp/theirs"\n')
    os.chown(planted, 4242, 4242)
    assert refusal(print_env(planted)) == (
        f"refusing the podman directory {planted}: owned by uid 4242, not 0 "
        "(remove it, or set DISTRIBUTED_SAC_PODMAN_DIR)"
    )


@needs_root
def test_a_directory_planted_at_a_users_default_location_is_refused():
    """Root plants /var/tmp/distributed_sac-podman-65534 before user 65534 builds: the user's
    run refuses it (scripts copied to a directory that user can read, as in
    test_system_packages)."""
    planted = f"{SHARED_DEFAULT}-{NOBODY}"
    os.mkdir(planted, 0o755)  # fails, naming it, if something is there already
    copy = tempfile.mkdtemp(prefix="dsac-build-local-")
    try:
        os.chmod(copy, 0o755)
        os.mkdir(os.path.join(copy, "docker"))
        script = shutil.copy(BUILD_LOCAL, os.path.join(copy, "docker"))
        as_nobody = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
        result = print_env(prefix=as_nobody, script=script)
    finally:
        shutil.rmtree(copy)
        os.rmdir(planted)
    assert refusal(result) == (
        f"refusing the podman directory {planted}: owned by uid 0, not {NOBODY} "
        "(remove it, or set DISTRIBUTED_SAC_PODMAN_DIR)"
    )


def test_a_symlink_is_refused_at_the_directory_and_above_it(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "podman"
    link.symlink_to(real)
    assert refusal(print_env(link)) == f"refusing the podman directory {link}: it is a symlink"
    via = tmp_path / "via"
    via.symlink_to(tmp_path)
    assert refusal(print_env(via / "real")) == (
        f"refusing the podman directory {via / 'real'}: its path goes through a symlink "
        f"(give the real path, under {tmp_path})"
    )


def test_a_directory_others_may_enter_or_replace_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    assert refusal(print_env(open_dir)) == (
        f"refusing the podman directory {open_dir}: mode 755 lets others in (chmod 700 it)"
    )
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone could rename the directory away and plant theirs
    assert refusal(print_env(shared / "podman")) == (
        f"refusing the podman directory {shared / 'podman'}: others may write {shared} "
        "(mode 777, not sticky)"
    )
    assert not (shared / "podman").exists()  # refused before anything was made


def test_a_relative_path_is_refused(tmp_path):
    assert refusal(print_env("podman")) == (
        "DISTRIBUTED_SAC_PODMAN_DIR must be an absolute path: podman"
    )
