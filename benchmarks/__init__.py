"""Performance benchmarks: ravenvpn against wireguard-go and the raw veth (see benchmarks/README.md).

``python3 -m benchmarks.run [--quick]`` from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# `tools` (the namespace test infrastructure) is not an installed package
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
