"""Erasure coding of segments through pyeclib.

A segment of up to ``segment_size`` bytes becomes k data and m parity
fragments. Any k of them give the segment back. When the k data fragments
are all present the codec joins their payloads directly instead of calling
the decoder (the codes used are systematic); this fast path is checked
against the real decoder when the codec is created, so a library whose
fragment format differs silently falls back to ``decode``.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from pyeclib.ec_iface import ECDriver

from .errors import DataLoss

_FALLBACK = "liberasurecode_rs_vand"


class Codec:
    """Encode and decode segments for one EC profile. Thread-safe."""

    def __init__(self, k: int, m: int, backend: str) -> None:
        self.k, self.m, self.backend = k, m, backend
        try:
            self._driver = ECDriver(k=k, m=m, ec_type=backend)
        except Exception:  # the backend library is not installed on this machine
            if backend == _FALLBACK:
                raise
            self.backend = _FALLBACK
            self._driver = ECDriver(k=k, m=m, ec_type=_FALLBACK)
        self._lock = threading.Lock()
        self._header = self._probe_fast_path()

    def _probe_fast_path(self) -> int | None:
        """80 (liberasurecode's fragment header) if joining data payloads gives the data back."""
        self._header = 80
        for length in (1, 5, 4099, 65536 + 3, 1 << 20):
            sample = bytes(range(256)) * (length // 256 + 1)
            sample = sample[:length]
            frags = self._driver.encode(sample)
            if self.decode(dict(enumerate(frags)), length) != sample:
                return None
        return 80

    def data_offset(self) -> int | None:
        """Where the data starts in each data fragment (its header's length), if the fast path holds.

        Data fragment ``i`` of a segment of ``length`` bytes then holds the
        bytes ``[i * per, (i + 1) * per)`` with ``per = ceil(length / k)``
        right after that header: a small read needs that one fragment only.
        None when the library's format differs (decode only).
        """
        return self._header

    def encode(self, segment: bytes) -> list[bytes]:
        """k + m fragments of ``segment``; fragment i is stored on the i-th drive."""
        return self._driver.encode(segment)

    def decode(self, fragments: dict[int, bytes], length: int) -> bytes:
        """The segment of ``length`` bytes from at least k valid fragments.

        Raises DataLoss when fewer than k are given.
        """
        if len(fragments) < self.k:
            raise DataLoss(f"only {len(fragments)} of the {self.k} fragments needed are readable")
        if self._header is not None and all(i in fragments for i in range(self.k)):
            h = self._header
            if self.k == 1:
                return bytes(fragments[0][h : h + length])
            per = -(-length // self.k)  # payload bytes of each data fragment that hold data
            views = [memoryview(fragments[i])[h : h + per] for i in range(self.k)]
            joined = b"".join(views)
            return joined if len(joined) == length else joined[:length]
        try:
            return self._driver.decode([bytes(fragments[i]) for i in sorted(fragments)])[:length]
        except Exception as exc:
            raise DataLoss(f"erasure decoding failed: {exc}") from exc

    def reconstruct(self, fragments: dict[int, bytes], missing: list[int]) -> dict[int, bytes]:
        """Rebuild the fragments ``missing`` from at least k valid others."""
        if len(fragments) < self.k:
            raise DataLoss(f"only {len(fragments)} of the {self.k} fragments needed are readable")
        out = {}
        available = [bytes(fragments[i]) for i in sorted(fragments)]
        for index in missing:
            try:
                out[index] = self._driver.reconstruct(available, [index])[0]
            except Exception as exc:
                raise DataLoss(f"rebuilding fragment {index} failed: {exc}") from exc
        return out


@lru_cache(maxsize=32)
def get_codec(k: int, m: int, backend: str) -> Codec:
    """A shared codec per profile (creating an ECDriver is not free)."""
    return Codec(k, m, backend)
