"""The emulator's data directory: a signing key made once, and an append-only log of commits.

A real ``spacetime start`` keeps its keys and a commit log on disk, so tokens and rows survive a
restart; this gives the emulator the same, in the simplest form that is still crash-safe::

    DIR/signing-key   64 hex digits (32 random bytes), written once (temporary file, fsync, rename)
    DIR/commitlog     MAGIC, then one record per commit:
                      u32 payload length | u32 CRC-32 of the payload | payload (JSON)   (big-endian)

The first record holds the database's header (name, module, schema digest) and the ``init``
reducer's changes, so a directory is new exactly when its log holds no valid record, and ``init``
runs once. Each later record holds one transaction's net changes (rows in the JSON form of their
type) and the auto-increment counters of the tables it touched.

fsync policy: a record is written with one ``write`` and ``fsync``-ed before the emulator tells any
client about its transaction (the reducer's caller, subscribers, the HTTP caller), so every commit a
client heard of survives ``kill -9`` or a power cut. The directory itself is fsync-ed after the
files are created.

Recovery: records are read until the first one that is short or fails its checksum, which is what
a crash in the middle of a write leaves. That tail is cut off, logged as a warning and reported in
``Recovery.ignored_bytes``; it never stops the emulator (its transaction was never acknowledged).
Replay is linear in the log's size: fine for test and demo data, there are no snapshots.

``StorageMixin`` is the emulator's part that loads a data directory and appends its commits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import struct
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rx_spacetimedb.protocol.jsontext import dumps, loads_exact
from rx_spacetimedb.testing._base import EmulatorBase
from rx_spacetimedb.testing.module import Database

__all__ = [
    "CommitLog",
    "Recovery",
    "StorageMixin",
    "commit_record",
    "open_data_dir",
    "replay",
    "schema_digest",
    "signing_key",
]

log = logging.getLogger("rx_spacetimedb.testing")

MAGIC = b"rx_spacetimedb emulator commitlog v1\n"
_HEAD = struct.Struct(">II")
_KEY_FILE = "signing-key"
_LOG_FILE = "commitlog"


@dataclass(frozen=True, slots=True)
class Recovery:
    """What opening a data directory found.

    Args:
        path: the data directory.
        new: True when it held no commit yet (``init`` runs then).
        commits: how many commit records were replayed (the header/``init`` record included).
        ignored_bytes: the size of a torn or corrupt tail that was cut off (0 normally).
    """

    path: Path
    new: bool
    commits: int
    ignored_bytes: int


def _fsync_dir(path: Path) -> None:
    """Make a file's creation or rename durable (the directory entry is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def signing_key(path: Path) -> bytes:
    """The 32-byte signing secret of a data directory, created on first use and reused after.

    Raises:
        ValueError: the key file exists but does not hold 64 hex digits.
    """
    key_file = path / _KEY_FILE
    if not key_file.exists():
        temporary = path / (_KEY_FILE + ".tmp")
        with open(temporary, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, key_file)
        _fsync_dir(path)
    text = key_file.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(
            f"{key_file} does not hold a signing key (64 hex digits); delete it to make a new one"
        )
    return key


class CommitLog:
    """The open, locked commit log of a data directory: append a record durably, or close it.

    The file is locked (``flock``) while open, so two emulators never write one directory.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd  # O_APPEND descriptor, None once closed

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record and fsync it; when this returns the commit survives a crash.

        Raises:
            OSError: the write or the fsync failed (the caller rolls the transaction back).
        """
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        payload = dumps(record).encode()
        data = _HEAD.pack(len(payload), zlib.crc32(payload)) + payload
        written = os.write(self._fd, data)
        if written != len(data):  # a short write on a regular file means the disk is full
            raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (and so release its lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock(fd: int, path: Path) -> None:
    if sys.platform != "win32":
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"{path} is in use by another emulator; give each emulator its own data_dir"
            ) from None


def _read_records(data: bytes) -> tuple[list[Any], int]:
    """The valid records of a log's bytes and where they end (the first short or corrupt one stops it)."""
    records: list[Any] = []
    position = len(MAGIC)
    while position + _HEAD.size <= len(data):
        length, checksum = _HEAD.unpack_from(data, position)
        start = position + _HEAD.size
        payload = data[start : start + length]
        if len(payload) != length or zlib.crc32(payload) != checksum:
            break
        try:
            records.append(loads_exact(payload))
        except ValueError:
            break
        position = start + length
    return records, position


def open_data_dir(path: Path) -> tuple[CommitLog, list[Any], Recovery]:
    """Open (creating it if needed) a data directory's log: the log, its records, what was found.

    A torn or corrupt tail is cut off (and logged) before the log is opened for appending.

    Raises:
        ValueError: ``commitlog`` exists but is not an emulator commit log.
        RuntimeError: another emulator holds the directory.
    """
    path.mkdir(parents=True, exist_ok=True)
    log_file = path / _LOG_FILE
    created = not log_file.exists()
    fd = os.open(log_file, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    _lock(fd, path)
    if created:
        _fsync_dir(path)
    with open(log_file, "rb") as source:
        data = source.read()
    if not data.startswith(MAGIC) and not MAGIC.startswith(data):
        os.close(fd)
        raise ValueError(f"{log_file} is not an rx_spacetimedb emulator commit log")
    records, end = _read_records(data) if len(data) >= len(MAGIC) else ([], 0)
    ignored = len(data) - end
    if ignored:
        log.warning(
            "%s: ignored a torn or corrupt last record (%d bytes after %d good records): a write "
            "interrupted by a crash, never acknowledged to any client",
            log_file,
            ignored,
            len(records),
        )
        os.ftruncate(fd, end)
    if end == 0:
        os.write(fd, MAGIC)
    if ignored or end == 0:
        os.fsync(fd)
    return CommitLog(log_file, fd), records, Recovery(path, not records, len(records), ignored)


def schema_digest(db: Database) -> str:
    """A short digest of the module's schema JSON: a data directory serves one schema."""
    return hashlib.sha256(dumps(db.schema.to_json()).encode()).hexdigest()[:32]


def commit_record(db: Database, changes: Mapping[str, tuple[list[Any], list[Any]]]) -> dict[str, Any]:
    """The log record of one transaction's net changes, with the touched tables' sequence counters."""
    tables: dict[str, Any] = {}
    sequences: dict[str, Any] = {}
    for name, (deleted, inserted) in changes.items():
        store = db.stores[name]
        tables[name] = [[store.encoder_c(r) for r in deleted], [store.encoder_c(r) for r in inserted]]
        if store.sequences:
            sequences[name] = {str(c): n for c, n in store.sequences.items()}
    return {"tables": tables, "sequences": sequences}


def replay(db: Database, record: Mapping[str, Any]) -> None:
    """Apply one commit record to ``db`` (rows decoded with their table's type, counters restored)."""
    changes: dict[str, tuple[list[Any], list[Any]]] = {}
    for name, (deleted, inserted) in record["tables"].items():
        store = db.stores[name]
        changes[name] = ([store.decoder(r) for r in deleted], [store.decoder(r) for r in inserted])
    db.apply(changes)
    for name, counters in record["sequences"].items():
        sequences = db.stores[name].sequences
        for column, value in counters.items():
            sequences[int(column)] = max(sequences.get(int(column), 1), value)


class StorageMixin(EmulatorBase):
    """Loads the database from ``data_dir`` and appends each commit before anyone hears of it."""

    def _open_data_dir(self) -> bool:
        """Load the database from ``data_dir``; True if it held one (so ``init`` must not run)."""
        assert self.data_dir is not None
        if self._log is not None:
            self._log.close()
        self.db = Database(self.module)
        self._log, records, self.recovery = open_data_dir(self.data_dir)
        header = {"database": self.database, "module": self.module.name, "schema": schema_digest(self.db)}
        if not records:
            self._header = header
            return False
        found = records[0].get("init")
        if found != header:
            self._log.close()
            self._log = None
            raise ValueError(
                f"{self.data_dir} holds {_describe(found)}, not database {self.database!r} of module "
                f"{self.module.name!r} with this schema; use another data_dir (or delete it to start over)"
            )
        for record in records:
            replay(self.db, record)
        return True

    def _persist(self, changes: Mapping[str, tuple[list[Any], list[Any]]]) -> None:
        """Append a commit to the log and fsync it, before anyone hears of it (no-op in memory).

        Raises:
            OSError: the commit could not be made durable (the caller rolls it back).
        """
        if self._log is None:
            if self.data_dir is not None:
                raise OSError("the emulator is stopped; start it again to write to its data_dir")
            return
        if not changes and self._header is None:
            return
        record = commit_record(self.db, changes)
        if self._header is not None:
            record["init"] = self._header
        self._log.append(record)
        self._header = None


def _describe(header: Any) -> str:
    """A data directory's header in words, for the error when it does not fit."""
    if not isinstance(header, dict):
        return "no database header"
    database, module = header.get("database"), header.get("module")
    return f"database {database!r} of module {module!r} (schema {header.get('schema')})"
