"""Keep a token between runs, so a restarted app keeps its identity (as the official SDKs do)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rx_spacetimedb.errors import CredentialsError

__all__ = ["CredentialStore", "default_credentials_path"]


def default_credentials_path(host: str, database: str) -> Path:
    """``~/.config/rx_spacetimedb/credentials/<host>_<database>.token`` (one file per server and db)."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{host}_{database}")
    return base / "rx_spacetimedb" / "credentials" / f"{safe}.token"


class CredentialStore:
    """A token file readable only by its owner; ``load()`` returns None when there is none yet."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> str | None:
        """The saved token, or None when there is no file yet.

        Raises:
            CredentialsError: the file is not a token ``save`` wrote (binary, empty, a directory,
                unreadable); the message names the file and what to do.
        """
        what = "it"
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            what = "it is a directory"
        except UnicodeDecodeError:
            what = "it is not text"
        except OSError as err:
            what = f"it cannot be read ({err.strerror or err})"
        else:
            if token and token.isprintable() and not any(c.isspace() for c in token):
                return token
            what = "it is empty" if not token else "it does not hold one token"
        raise CredentialsError(f"credentials file {str(self.path)!r}: {what}; it should hold the token "
                               "saved by an earlier run. Delete it to connect as a new identity, or "
                               "pass another credentials= path")

    def save(self, token: str) -> None:
        """Write the token atomically with mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        """Forget the token (the next anonymous connect mints a new identity)."""
        self.path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"<CredentialStore {str(self.path)!r} {'saved' if self.path.exists() else 'empty'}>"
