"""How a definition is stored: an 8-byte digest, then its exact JSON compressed with zstd.

Each table of a release gets a dictionary trained on a sample of its own definitions (a small
table goes without), so each definition compresses on its own to a tenth of its size and is read
back alone. The digest is what diffs compare: it covers every byte of the definition but the
top-level `index`, which Bungie renumbers on most releases (docs/DECISIONS.md, "Whole
definitions").
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Sequence

import zstandard

# The layout of a stored value; a release's record names the format it was written in.
FORMAT = 2
DIGEST_BYTES = 8
LEVEL = 3
DICTIONARY_BYTES = 32 * 1024
# The sample a dictionary is trained on: the table's leading definitions, this many bytes (a
# first slab holds more: at least 1.5 MiB of whole entries).
SAMPLE_BYTES = 1024 * 1024
# A table whose sample is smaller than this goes without a dictionary: it would not pay for
# itself (and zstd cannot train one on too few samples).
MIN_SAMPLE_BYTES = 256 * 1024
MIN_SAMPLES = 64
# Training parameters chosen by measurement (bench/ingest.py): a fixed cover instead of zstd's
# search over parameters trains in a few milliseconds and compresses as well, and faster.
TRAINING = {"k": 2048, "d": 8, "steps": 4, "level": LEVEL}
# Threads multi_compress_to_buffer may use: zstd releases the GIL while it compresses.
COMPRESS_THREADS = 2

_INDEX = b'"index"'
# `"index": N` followed by no bracket but the definition's closing brace, looked for in its
# last bytes (Bungie writes `hash`, `index`, `redacted`, `blacklisted` last).
_TRAILING_INDEX = re.compile(rb'"index"\s*:\s*-?[0-9][0-9.eE+-]*(?=[^\[\]{}]*\}\s*\Z)')
_TAIL_BYTES = 512
# A JSON number after `"index"`, with the colon and any spaces before it.
_INDEX_VALUE = re.compile(rb"\s*:\s*-?[0-9][0-9.eE+-]*")
# What an exact scan of a definition looks at: whole strings (their brackets are text), and
# brackets.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]', re.DOTALL)
# A digest is CRC-32 then Adler-32, 4 bytes each (docs/DECISIONS.md: why not a cryptographic
# hash). zlib computes both at C speed, holding the GIL for a definition under 5 KiB.
_pack = struct.Struct(">II").pack


def digest(definition: bytes, *, blind_to_index: bool = True) -> bytes:
    """Return a definition's digest: CRC-32 and Adler-32 of it without its top-level `index`.

    Bungie writes `index` among the last fields of a definition, after every nested object:
    then what follows it holds no bracket but the definition's closing brace, and it is found
    from the end in a step. A definition laid out otherwise takes an exact scan. Not
    `blind_to_index`, the digest is of every byte.
    """
    span = None
    if blind_to_index:
        span = _trailing_index(definition) or _top_level_index(definition)
    if span is None:
        return _pack(zlib.crc32(definition), zlib.adler32(definition))
    head, tail = definition[: span[0]], definition[span[1] :]
    return _pack(zlib.crc32(tail, zlib.crc32(head)), zlib.adler32(tail, zlib.adler32(head)))


def _trailing_index(data: bytes) -> tuple[int, int] | None:
    """Return the span of `"index": N` if it is the top-level one found near the end.

    No opening bracket after it, and one closer only (the definition's own last brace): the
    field is at the top level. A bracket in a string there sends it to the exact scan.
    """
    found = _TRAILING_INDEX.search(data, max(0, len(data) - _TAIL_BYTES))
    return found.span() if found is not None else None


def _top_level_index(data: bytes) -> tuple[int, int] | None:
    """Return the span of the top-level `"index": N` by scanning brackets and strings."""
    depth = 0
    for token in _TOKENS.finditer(data):
        text = token.group()
        if text in (b"{", b"["):
            depth += 1
        elif text in (b"}", b"]"):
            depth -= 1
        elif depth == 1 and text == _INDEX:
            value = _INDEX_VALUE.match(data, token.end())
            if value is not None:
                return token.start(), value.end()
    return None


def train(definitions: Sequence[bytes]) -> bytes | None:
    """Return a dictionary trained on the leading definitions, or None if they are too few.

    Only the definitions up to SAMPLE_BYTES, in table order, are the sample: so the dictionary
    depends on the table alone, not on where a download's first slab happened to be cut, and a
    run that took a lost lock over writes the very bytes the run before it would have.
    """
    sample = []
    size = 0
    for definition in definitions:
        sample.append(definition)
        size += len(definition)
        if size >= SAMPLE_BYTES:
            break
    if len(sample) < MIN_SAMPLES or size < MIN_SAMPLE_BYTES:
        return None
    try:
        trained = zstandard.train_dictionary(DICTIONARY_BYTES, sample, **TRAINING)
    except zstandard.ZstdError:
        return None  # Samples too alike or too few for zstd: plain compression then.
    return trained.as_bytes()


class Packer:
    """Pack definitions for storage: digest, then the frame compressed with the dictionary."""

    def __init__(self, dictionary: bytes | None) -> None:
        data = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
        self._compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=data)

    def pack(self, definitions: Sequence[bytes], digests: Sequence[bytes]) -> list[bytes]:
        """Return the stored values of `definitions`, whose digests are `digests`, in order."""
        if not definitions:
            return []
        frames = self._compressor.multi_compress_to_buffer(
            list(definitions), threads=COMPRESS_THREADS
        )
        return [d + frames[i].tobytes() for i, d in enumerate(digests)]


class Unpacker:
    """Read stored definitions of one table of a release back into their JSON, from any thread."""

    def __init__(self, dictionary: bytes | None) -> None:
        self._dictionary = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
        # A decompressor must not be used by two threads at once: one per thread.
        self._local = threading.local()

    def unpack(self, stored: bytes) -> bytes:
        """Return the definition JSON of a stored value; raise zstandard.ZstdError if damaged.

        A value stored as plain JSON (format 1, projections) is returned as it is.
        """
        if not is_packed(stored):
            return stored
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = zstandard.ZstdDecompressor(dict_data=self._dictionary)
            self._local.decompressor = decompressor
        return decompressor.decompress(memoryview(stored)[DIGEST_BYTES:])


def is_packed(stored: bytes) -> bool:
    """Say whether a stored value is packed (format 2), not plain JSON (format 1).

    A zstd frame's magic follows the digest; its 0xFD never occurs in UTF-8 JSON.
    """
    return stored[DIGEST_BYTES : DIGEST_BYTES + 4] == zstandard.FRAME_HEADER


def stored_digest(stored: bytes) -> bytes:
    """Return the digest a stored value starts with."""
    return stored[:DIGEST_BYTES]
