"""Performance benchmarks: ravenvpn against wireguard-go and the raw veth (see benchmarks/README.md).

``python3 -m benchmarks.run [--quick]`` from the repository root (which ``-m`` puts on ``sys.path``, so
the test support package ``tools`` imports as well).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
