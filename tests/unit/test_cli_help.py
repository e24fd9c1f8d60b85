"""`ravenvpn` help, version and usage mistakes (issue 13 L1), and genkey's warnings (M6). No root."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_cli import ROOT, ravenvpn  # noqa: F401  (the fixture)


def test_bare_ravenvpn_prints_the_help(ravenvpn) -> None:
    res = ravenvpn()
    assert res.returncode == 0 and res.stderr == ""
    for name in ("genkey", "pubkey", "genpsk", "up", "down", "status", "--help"):
        assert name in res.stdout


def test_version(ravenvpn) -> None:
    res = ravenvpn("--version")
    assert res.returncode == 0 and res.stdout.startswith("ravenvpn ") and res.stdout.count("\n") == 1


@pytest.mark.parametrize("args, help_of", [
    (["up"], "ravenvpn up --help"),
    (["up", "--cluster", "c.yaml"], "ravenvpn up --help"),
    (["status", "--bogus"], "ravenvpn status --help"),
    (["down", "extra"], "ravenvpn down --help"),
    (["genkey", "extra"], "ravenvpn genkey --help"),
    (["frobnicate"], "ravenvpn --help"),
])
def test_a_usage_mistake_points_at_the_help_of_its_subcommand(ravenvpn, args: list[str], help_of: str) -> None:
    res = ravenvpn(*args)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("ravenvpn: ") and f"(see '{help_of}')" in res.stderr, res.stderr


def test_up_help_says_root_defaults_signals_files_and_environment(ravenvpn) -> None:
    out = " ".join(ravenvpn("up", "--help").stdout.split())     # argparse wraps lines
    for fact in ("needs root (or CAP_NET_ADMIN)", "default raven0", "default 4500", "/run/ravenvpn",
                 "--state-dir", "SIGTERM", "SIGINT", "SIGHUP", "RAVENVPN_BUSY_POLL_US", "RAVENVPN_UDP_GSO",
                 "RAVENVPN_TUN_OFFLOAD", "--private-key is required on every node listed as a tunnel",
                 "the path toward the peers - 80", "standard input"):
        assert fact in out, fact


@pytest.mark.parametrize("command, facts", [
    ("down", ("needs root (or CAP_NET_ADMIN)", "default raven0", "/run/ravenvpn", "nothing")),
    ("status", ("default raven0", "/run/ravenvpn", "root", "--json")),
    ("genkey", ("umask 077", "needs no root")),
    ("pubkey", ("stdin", "needs no root")),
    ("genpsk", ("needs no root",)),
])
def test_every_subcommand_help_has_a_description_and_defaults(ravenvpn, command: str, facts: tuple[str, ...]) -> None:
    res = ravenvpn(command, "--help")
    assert res.returncode == 0
    usage, _, rest = res.stdout.partition("\n\n")
    assert rest.strip() and not rest.startswith("options:"), f"{command} --help has no description"
    text = " ".join(res.stdout.split())
    for fact in facts:
        assert fact in text, (command, fact)


def run_genkey(tmp_path: Path, shell: str, umask: int) -> subprocess.CompletedProcess[str]:
    """`ravenvpn genkey` through a shell, as README's recipe runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAVENVPN=f"{sys.executable} -m ravenvpn.cli")
    return subprocess.run(["sh", "-c", f"umask {umask:o}; {shell}"], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=30)


def test_genkey_warns_when_the_umask_lets_others_read_the_key(tmp_path: Path) -> None:
    res = run_genkey(tmp_path, "$RAVENVPN genkey | tee key > /dev/null", 0o022)
    assert res.returncode == 0 and "umask 0022 lets others read" in res.stderr and "umask 077" in res.stderr
    res = run_genkey(tmp_path, "$RAVENVPN genkey > key2", 0o022)     # a regular file others can read
    assert "file others can read" in res.stderr


def test_readme_key_recipe_gives_a_key_up_accepts_and_no_warning(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    recipe = "umask 077; ravenvpn genkey | tee key | ravenvpn pubkey > key.pub"
    assert recipe in readme
    res = run_genkey(tmp_path, recipe.replace("ravenvpn", "$RAVENVPN"), 0o022)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    from ravenvpn.raven.node.keyfile import read_private_key
    assert len(read_private_key(tmp_path / "key")) == 32          # mode 0600: accepted
    assert len((tmp_path / "key.pub").read_text().strip()) == 44


def test_ravenvpn_wg_help_says_what_it_is() -> None:
    res = subprocess.run([sys.executable, "-m", "ravenvpn.device.daemon", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("usage: ravenvpn-wg")
    described = " ".join(lines[1:8])
    for words in ("userspace WireGuard interface", "wireguard-go", "ip link del IFNAME", "root"):
        assert words in described, res.stdout


def test_port_equal_to_the_liveness_port_names_both_flags(ravenvpn) -> None:
    res = ravenvpn("up", "--cluster", "c.yaml", "--node", "n", "--port", "4501")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("ravenvpn: --port 4501 is also the failover liveness port (--liveness-port"), res.stderr


def test_a_directory_as_key_file_is_not_offered_chmod(tmp_path: Path) -> None:
    from ravenvpn.errors import RavenError
    from ravenvpn.raven.node.keyfile import read_private_key
    tmp_path.chmod(0o1777)
    with pytest.raises(RavenError) as err:
        read_private_key(tmp_path)
    assert str(err.value) == f"private key file {tmp_path}: not a regular file"
