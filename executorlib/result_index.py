"""Packs of small results, so that a process reattaching to thousands of cached calls opens a few
files instead of one HDF5 file per call.

``<cache_directory>/.index/pack-*.h5`` each hold copies of successful results whose pickle is at
most :data:`MAX_ENTRY_BYTES`: the key, a stamp of the task's result.h5 (inode, size, mtime in ns),
the pickled value and its crc32. A value whose crc32 does not match is never used (result.h5 is
read instead), and a pack whose table of keys, stamps, offsets and checksums does not match its
own crc32 is not loaded. result.h5 stays the only source of truth: an entry is used only while the
stamp still matches the result.h5 next to it (one ``stat``), so a task that was deleted or
recomputed is never answered from a pack, and a pack that is lost, corrupt or deleted only costs
speed. The whole ``.index`` folder may be removed at any time.

Packs are written by the client (never by jobs): the small results this process read from
their task folders (result.pkl or result.h5) become a new pack when the Executor shuts down, two
seconds after the last such read, or once they exceed :data:`MAX_PENDING_BYTES`; when more than
:data:`MAX_PACKS` packs under :data:`MERGE_BELOW` bytes exist, the writer merges them into one
and drops stale entries. Every pack is written to
a temporary name and renamed into place; concurrent writers only duplicate entries. The values
are read through a memory map of the pack, so loading an index costs memory only for what is used.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from executorlib.files import (INDEX_DIR, MAX_COPY_BYTES, RESULT_FILE, remove_stale_temporaries, stamp_of,
                               write_atomic)

__all__ = ["ResultIndex", "MAX_ENTRY_BYTES", "MAX_PACKS"]

FORMAT_VERSION = 2  # 2: a crc32 per value and one over the table (packs of version 1 are ignored)
MAX_ENTRY_BYTES = MAX_COPY_BYTES  # larger results are read from result.h5 only (no second copy on disk)
MAX_PACKS = 8  # more packs than this are merged by the next writer
MIN_NEW_ENTRIES = 64  # fewer results than this are cheap to read from their files: no pack
MAX_PENDING_BYTES = 16 * 1024 * 1024  # values held for the next pack: written out beyond this
MERGE_BELOW = 16 * 1024 * 1024  # only packs smaller than this are merged (bounded memory)

Stamp = tuple[int, int, int]


class _Pack:
    """One loaded pack: key -> (stamp, offset, length) and a memory map of its values."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, tuple[Stamp, int, int, int]] = {}
        self._map: Optional[mmap.mmap] = None
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise ValueError(f"pack {path} has another format version")
            keys = f["keys"][()]
            stamps = f["stamps"][()]
            offsets = f["offsets"][()]
            crcs = f["crc32"][()]
            table_crc = int(f.attrs["table_crc32"])
            blob = f["blob"]
            blob_offset = blob.id.get_offset()
            blob_size = int(blob.shape[0])
        self.size = blob_size
        if _table_crc(keys, stamps, offsets, crcs) != table_crc:
            raise ValueError(f"pack {path} is damaged (its table does not match its checksum)")
        if (len(offsets) != len(keys) + 1 or len(stamps) != len(keys) or len(crcs) != len(keys)
                or offsets[-1] != blob_size):
            raise ValueError(f"pack {path} is inconsistent")
        if blob_size:
            if blob_offset is None:
                raise ValueError(f"pack {path} has no contiguous data")
            with open(path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            if blob_offset + blob_size > len(self._map):
                raise ValueError(f"pack {path} is cut short")
        self._base = int(blob_offset or 0)
        starts = offsets.tolist()
        for i, (key, stamp, crc) in enumerate(zip(keys.tolist(), stamps.tolist(), crcs.tolist())):
            self.entries[key.decode()] = (tuple(stamp), starts[i], starts[i + 1] - starts[i], crc)

    def value(self, offset: int, length: int, crc: int) -> Optional[memoryview]:
        """The bytes of one value, or None when they do not match their crc32 (damaged)."""
        assert self._map is not None
        start = self._base + offset
        data = memoryview(self._map)[start:start + length]
        return data if zlib.crc32(data) == crc else None


def _table_crc(keys: np.ndarray, stamps: np.ndarray, offsets: np.ndarray, crcs: np.ndarray) -> int:
    crc = zlib.crc32(b"\0".join(bytes(k) for k in keys.tolist()))
    for array in (stamps, offsets, crcs):
        crc = zlib.crc32(np.ascontiguousarray(array, dtype=np.int64).tobytes(), crc)
    return crc


class ResultIndex:
    """The packs of one cache directory, loaded on the first lookup; thread-safe."""

    def __init__(self, cache_directory: Path):
        self.cache_directory = cache_directory
        self.directory = cache_directory / INDEX_DIR
        self._lock = threading.Lock()
        self._loaded = False
        self._packs: list[_Pack] = []
        self._lookup: dict[str, tuple[Stamp, _Pack, int, int, int]] = {}
        self._new: dict[str, tuple[Stamp, bytes]] = {}  # read from result.h5 files, not packed yet
        self._last_new = 0.0
        self._new_bytes = 0

    # -- reading -------------------------------------------------------------------------------
    def _load(self) -> None:
        self._loaded = True
        try:
            names = sorted(p for p in os.listdir(self.directory) if p.startswith("pack-") and p.endswith(".h5"))
        except OSError:
            return
        for name in names:
            try:
                pack = _Pack(self.directory / name)
            except Exception:  # noqa: BLE001 - vanished, cut short, foreign: packs only save time
                continue
            self._packs.append(pack)
            for key, (stamp, offset, length, crc) in pack.entries.items():
                self._lookup[key] = (stamp, pack, offset, length, crc)

    def get(self, key: str, stamp: Stamp) -> Optional[memoryview]:
        """The pickled value of ``key`` if a pack holds it, intact, for exactly this result.h5,
        else None (a damaged entry is forgotten: result.h5 is read, and the next pack has it)."""
        with self._lock:
            if not self._loaded:
                self._load()
            found = self._lookup.get(key)
            if found is None or found[0] != stamp:
                return None
            data = found[1].value(found[2], found[3], found[4])
            if data is None:
                del self._lookup[key]
            return data

    def remember(self, key: str, stamp: Stamp, data: bytes) -> None:
        """Note a value read from result.h5, to be packed at :meth:`flush`."""
        if len(data) > MAX_ENTRY_BYTES:
            return
        with self._lock:
            self._new[key] = (stamp, bytes(data))
            self._new_bytes += len(data)
            self._last_new = time.monotonic()
            full = self._new_bytes > MAX_PENDING_BYTES
        if full:  # a long session that reads many results: no unbounded memory until it ends
            self.flush(minimum=1)

    # -- writing -------------------------------------------------------------------------------
    def flush_if_quiet(self, quiet: float = 2.0) -> None:
        """:meth:`flush` once no new value was read for ``quiet`` seconds (the scheduler's idle
        passes call this, so a notebook that is never shut down still leaves its pack)."""
        if self._new and time.monotonic() - self._last_new >= quiet:
            self.flush()

    def flush(self, minimum: Optional[int] = None) -> None:
        """Write the remembered values as a new pack (merging all packs when there are too many).

        Merging drops the entries whose result.h5 changed or vanished. Failures (read-only or full
        file system) are ignored: packs only save time.
        """
        with self._lock:
            if len(self._new) < (MIN_NEW_ENTRIES if minimum is None else minimum):
                return
            if not self._loaded:
                self._load()
            entries = {k: v for k, v in self._new.items()
                       if k not in self._lookup or self._lookup[k][0] != v[0]}
            self._new.clear()
            self._new_bytes = 0
            small = [p for p in self._packs if p.size < MERGE_BELOW]
            merged = small if entries and len(small) + 1 > MAX_PACKS else []
            packed = {k: v for k, v in self._lookup.items() if v[1] in merged} if merged else {}
        if not entries:
            return
        for key, (stamp, pack, offset, length, crc) in packed.items():
            if key in entries:
                continue
            try:
                current = stamp_of(os.stat(self.cache_directory / key / RESULT_FILE))
            except OSError:
                continue  # the task was deleted
            data = pack.value(offset, length, crc) if current == stamp else None
            if data is not None:  # unchanged and intact
                entries[key] = (stamp, bytes(data))
        try:
            path = self._write(entries)
            written = _Pack(path)
        except Exception:  # noqa: BLE001 - see above
            return
        for pack in merged:  # their live entries are in the new pack
            try:
                os.unlink(pack.path)
            except OSError:
                pass
        with self._lock:  # this process answers from the new pack too, instead of re-reading files
            self._packs = [p for p in self._packs if p not in merged] + [written]
            for key, (stamp, offset, length, crc) in written.entries.items():
                self._lookup[key] = (stamp, written, offset, length, crc)

    def _write(self, entries: dict[str, tuple[Stamp, bytes]]) -> Path:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        keys = list(entries)
        values = [entries[k][1] for k in keys]
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum([len(v) for v in values], out=offsets[1:])
        blob = np.frombuffer(b"".join(values), dtype=np.uint8)
        stamps = np.array([entries[k][0] for k in keys], dtype=np.int64).reshape(len(keys), 3)
        encoded = np.array([k.encode() for k in keys])
        crcs = np.array([zlib.crc32(v) for v in values], dtype=np.int64)

        def fill(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                f.attrs["format_version"] = FORMAT_VERSION
                f.create_dataset("keys", data=encoded)
                f.create_dataset("stamps", data=stamps)
                f.create_dataset("offsets", data=offsets)
                f.create_dataset("crc32", data=crcs)
                # read back as stored, so that the reader computes the very same bytes
                f.attrs["table_crc32"] = _table_crc(f["keys"][()], stamps, offsets, crcs)
                # contiguous and always allocated, so that readers can memory-map it
                f.create_dataset("blob", data=blob if len(blob) else np.zeros(0, dtype=np.uint8))

        path = self.directory / f"pack-{uuid.uuid4().hex}.h5"
        remove_stale_temporaries(self.directory)  # of a writer killed while writing its pack
        write_atomic(path, fill)
        return path
