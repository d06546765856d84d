"""launch/system-packages.txt and ensure_system_packages (launch/common.sh): the Debian packages
the tests and docker/build_local.sh use, checked by package and installed by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from distributed_sac.runtime.processes import run_bounded
from tests.conftest import REPO_ROOT

COMMON_SH = os.path.join(REPO_ROOT, "launch", "common.sh")
LIST = os.path.join(REPO_ROOT, "launch", "system-packages.txt")

debian = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")


def listed(*groups: str) -> list[str]:
    with open(LIST) as f:
        rows = [line.split()[:2] for line in f if line.strip() and not line.startswith("#")]
    return [package for group, package in rows if group in groups]


def ensure(*groups: str, env=None, prefix=(), common_sh=COMMON_SH) -> subprocess.CompletedProcess:
    script = f'source "{common_sh}" && ensure_system_packages "$@"'
    return run_bounded([*prefix, "bash", "-c", script, "ensure", *groups], 600, env=env)


def test_the_list_has_both_groups_and_nothing_else():
    assert set(listed("test")) == {
        "procps",
        "util-linux",
        "mount",
        "iproute2",
        "iptables",
        "stunnel4",
        "openssl",
    }
    assert set(listed("container")) == {
        "podman",
        "runc",
        "netavark",
        "aardvark-dns",
        "iptables",
        "debootstrap",
    }
    with open(LIST) as f:
        groups = {line.split()[0] for line in f if line.strip() and not line.startswith("#")}
    assert groups == {"test", "container"}


@debian
def test_after_launch_test_sh_every_listed_package_is_installed_and_a_rerun_does_nothing():
    # launch/test.sh ran ensure_system_packages before pytest (as root, both groups).
    groups = ("test", "container") if os.geteuid() == 0 else ("test",)
    for package in listed(*groups):
        status = run_bounded(["dpkg-query", "-W", "-f=${db:Status-Status}", package], 60)
        assert status.stdout == "installed", package
    result = ensure(*groups)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@debian
def test_a_user_who_cannot_install_is_told_the_one_command():
    # dpkg-query says iproute2 is missing; the user is not root, so nothing is installed. (Under
    # /tmp itself, with copies of the scripts: pytest's own tmp_path, and a checkout under a
    # directory of mode 0700, are closed to other users.)
    fake = tempfile.mkdtemp(prefix="dsac-fake-dpkg-")
    try:
        os.chmod(fake, 0o755)
        launch = os.path.join(fake, "launch")
        os.mkdir(launch)
        for path in (COMMON_SH, LIST):
            shutil.copy(path, launch)
        with open(os.path.join(fake, "dpkg-query"), "w") as script:
            script.write(
                '#!/bin/sh\nfor last; do :; done\n[ "$last" = iproute2 ] && exit 1\n'
                "printf installed\n"
            )
        os.chmod(os.path.join(fake, "dpkg-query"), 0o755)
        env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
        prefix = ()
        if os.geteuid() == 0:
            prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        result = ensure("test", env=env, prefix=prefix, common_sh=os.path.join(launch, "common.sh"))
    finally:
        shutil.rmtree(fake)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: missing Debian packages: iproute2; install them with: "
        "sudo apt-get install --no-install-recommends iproute2"
    )
