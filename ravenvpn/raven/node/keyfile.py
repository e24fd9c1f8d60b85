"""Reading a WireGuard private key file, with the permission check ``wg`` only warns about."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ...errors import RavenError
from ...protocol import keys

__all__ = ["read_private_key"]


def read_private_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte private key stored base64-encoded (as ``wg genkey`` prints it) in ``path``.

    The file must be readable by its owner only: ``wg`` warns about a key file others can read,
    ravenvpn refuses it, since the key is the node's identity in every tunnel.

    Raises:
        RavenError: the file cannot be read or is not a regular file, has group or other permissions (the message says
            ``chmod 600``), or does not hold one base64 32-byte key. The key never appears in a message.
    """
    name = os.fspath(path)
    try:
        st = os.stat(name)
        if not stat.S_ISREG(st.st_mode):    # a directory's mode is no key's: suggesting chmod would harm
            raise RavenError(f"private key file {name}: not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RavenError(f"private key file {name}: has group or other permissions (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {name}'")
        text = Path(name).read_text()
    except OSError as exc:
        raise RavenError(f"private key file {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RavenError(f"private key file {name}: not a base64 key (binary data)") from None
    try:
        return keys.b64decode(text)
    except ValueError as exc:
        raise RavenError(f"private key file {name}: {exc}") from None
