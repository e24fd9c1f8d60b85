"""`ravenvpn genkey|pubkey|genpsk`: same base64 forms as `wg`, cross-checked against the real `wg`."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WG = shutil.which("wg")


def ravenvpn_subprocess(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real entry point, as a separate process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "ravenvpn.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=30)


@pytest.fixture
def ravenvpn(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """cli.main in-process (fast), with the same result shape as a subprocess run."""
    from io import StringIO

    from ravenvpn import cli

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "stdin", StringIO(stdin))
        try:
            code = cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return run


def wg_pubkey(private_b64: str) -> str:
    assert WG, "wireguard-tools (wg) is required for the cross-check"
    return subprocess.run([WG, "pubkey"], input=private_b64 + "\n", capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()


def test_genkey_is_clamped_base64_and_matches_wg_pubkey() -> None:
    ravenvpn = ravenvpn_subprocess      # once through the real entry point
    res = ravenvpn("genkey")
    assert res.returncode == 0
    key = res.stdout.strip()
    raw = base64.b64decode(key, validate=True)
    assert len(key) == 44 and len(raw) == 32 and res.stdout.endswith("\n")
    assert raw[0] & 7 == 0 and raw[31] & 0x80 == 0 and raw[31] & 0x40      # clamped, like wg genkey
    pub = ravenvpn("pubkey", stdin=key + "\n")
    assert pub.returncode == 0 and pub.stdout.strip() == wg_pubkey(key)


def test_pubkey_of_wg_generated_and_unclamped_keys(ravenvpn) -> None:
    keys = [subprocess.run([WG, "genkey"], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(3)] if WG else []
    keys.append(base64.b64encode(b"\xff" * 32).decode())     # not clamped: both must clamp the same way
    keys.append(base64.b64encode(bytes(range(32))).decode())
    for key in keys:
        assert ravenvpn("pubkey", stdin=key).stdout.strip() == wg_pubkey(key)


def test_genpsk(ravenvpn) -> None:
    a, b = ravenvpn("genpsk").stdout.strip(), ravenvpn("genpsk").stdout.strip()
    assert len(base64.b64decode(a, validate=True)) == 32 and a != b


@pytest.mark.parametrize("bad", ["", "garbage", "A" * 44, base64.b64encode(b"x" * 31).decode(),
                                 base64.b64encode(b"x" * 32).decode()[:-1] + "!"])
def test_pubkey_bad_input_is_one_line(ravenvpn, bad: str) -> None:
    res = ravenvpn("pubkey", stdin=bad)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("ravenvpn: ") and res.stderr.count("\n") == 1, res.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["genkey", "extra"]])
def test_usage_errors_are_one_line(ravenvpn, args: list[str]) -> None:
    res = ravenvpn(*args)
    assert res.returncode == 1
    assert res.stderr.startswith("ravenvpn: ") and res.stderr.count("\n") == 1, res.stderr


def test_help_lists_subcommands(ravenvpn) -> None:
    res = ravenvpn("--help")
    assert res.returncode == 0
    for name in ("genkey", "pubkey", "genpsk"):
        assert name in res.stdout


def test_in_process_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from io import StringIO

    from ravenvpn import cli
    from ravenvpn.protocol import keys

    private = keys.generate_private()
    monkeypatch.setattr(sys, "stdin", StringIO(keys.b64encode(private) + "\n"))
    assert cli.main(["pubkey"]) == 0
    assert capsys.readouterr().out == keys.b64encode(keys.public_from_private(private)) + "\n"


def test_subprocess_bad_input_has_no_traceback() -> None:
    res = ravenvpn_subprocess("pubkey", stdin="not a key\n")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


@pytest.mark.parametrize("iface", ["a/b", "", "x" * 16])
def test_up_bad_interface_is_one_line(ravenvpn, tmp_path: Path, iface: str) -> None:
    res = ravenvpn("up", "--cluster", "-", "--node", "n", "--interface", iface, "--state-dir", str(tmp_path))
    assert res.returncode == 1 and res.stderr.startswith("ravenvpn: --interface") and res.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []       # refused before any pid or state file is written


def test_up_bad_busy_poll_setting_is_one_line(ravenvpn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAVENVPN_BUSY_POLL_US", "soon")
    res = ravenvpn("up", "--cluster", "-", "--node", "n", "--state-dir", str(tmp_path))
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("ravenvpn: RAVENVPN_BUSY_POLL_US must be 0..1000000 microseconds"), res.stderr
    assert list(tmp_path.iterdir()) == []


def test_up_bad_mtu_is_a_one_line_error_not_a_traceback(tmp_path: Path) -> None:
    from ravenvpn.errors import RavenError
    from ravenvpn.raven.node.agent import Agent

    agent = Agent(str(ROOT / "examples" / "cluster-three-domains.yaml"), "hz-2", mtu=100, state_dir=str(tmp_path))
    with pytest.raises(RavenError, match="mtu 100 out of range"):
        agent.compute_plan()


def test_a_stale_pid_file_naming_an_unrelated_process_is_not_ravenvpn_up(tmp_path: Path) -> None:
    from ravenvpn.raven.node.pidfile import running_pid
    from ravenvpn.raven.node.records import pid_path

    other = subprocess.Popen(["sleep", "30"])      # stands in for a process that reused the pid
    try:
        pid_path(tmp_path, "raven0").write_text(str(other.pid))
        assert running_pid(tmp_path, "raven0") is None      # so `down` will not SIGTERM it
    finally:
        other.kill()
        other.wait()
