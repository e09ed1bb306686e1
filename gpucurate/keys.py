"""Sample keys and the keep decision, as a public API (host side)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError


def fnv1a_str(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def key_hashes(column, where: str = "key column", first_row: int = 0,
               fix: str = "fill it, or drop --key-column to key by shard and row") -> np.ndarray:
    """uint64 key per row: integers as their two's-complement value, strings
    (and binary) as FNV-1a of their bytes. A null key raises, naming the row
    and ``fix``."""
    from .kernels.keys import hash_rows

    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        col = column
    elif isinstance(column, np.ndarray) and column.dtype.kind in "iu":
        col = pa.array(column)  # integer ids: their values, not captions
    else:
        seq = list(column)
        if not seq:
            return np.zeros(0, np.uint64)
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in seq):
            return _int_keys(seq, where, first_row)
        try:
            col = pa.array(seq)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: {exc}; give one key per row, all integers or all "
                             "strings") from None
    if col.null_count:
        isnull = pc.is_null(col)
        row = int(pc.index(isnull, True).as_py())
        raise InputError(f"{where}: row {first_row + row} has a null key; every sample needs "
                         f"a key ({fix})")
    t = col.type
    if pa.types.is_dictionary(t):  # (a pandas category): its values, as if plain
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_integer(t):
        arr = col.to_numpy()
        if pa.types.is_unsigned_integer(t):
            return arr.astype(np.uint64)
        return arr.astype(np.int64).view(np.uint64)
    if not is_key_type(t):
        raise InputError(f"{where}: keys must be integers or strings, not {t}; give "
                         "--key-column a column of integer or string ids")
    out = []
    col = col.cast(pa.large_binary())
    for chunk in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
        bufs = chunk.buffers()
        offs = np.frombuffer(bufs[1], np.int64, count=len(chunk) + 1, offset=chunk.offset * 8)
        data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else \
            np.zeros(1, np.uint8)
        h = np.empty(len(chunk), np.uint64)
        hash_rows(data, offs, h)
        out.append(h)
    return np.concatenate(out) if out else np.zeros(0, np.uint64)


def is_key_type(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` can key samples (a dictionary: by its values)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def row_key_hashes(shard_name: str, first_row: int, n: int) -> np.ndarray:
    """Default keys: mix(FNV-1a(shard name) ^ row index), rows first_row.."""
    from .kernels.keys import row_keys

    out = np.empty(n, np.uint64)
    row_keys(np.uint64(fnv1a_str(shard_name)), first_row, out)
    return out


def probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """prob[e] = t / max(count[e], t): 1.0 for count <= t, zero counts included."""
    c = np.asarray(counts, dtype=np.float64)
    return float(t) / np.maximum(c, float(t))


def keep(entry_ids, prob, keys, seed: int = 0) -> np.ndarray:
    """The pinned keep decision per caption, as the curation pipeline takes it.

    ``entry_ids``: per caption, its matched entry ids (a pyarrow list array or
    a list of lists); ``prob``: per-entry probabilities (:func:`probabilities`);
    ``keys``: per caption, a uint64 key as :func:`key_hashes` gives (or ints /
    strings, hashed here). Returns a bool array. A caption is kept when some
    entry e draws u(seed, key, e) < prob[e]; captions with no match never are.
    """
    from .kernels.cpu import keep_range

    from .errors import ConfigError

    lists = entry_ids if isinstance(entry_ids, (pa.Array, pa.ChunkedArray)) else \
        pa.array(entry_ids, pa.list_(pa.int32()))
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks else \
            pa.array([], pa.list_(pa.int32()))
    t = lists.type
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t) or \
            pa.types.is_fixed_size_list(t):  # views and fixed sizes: as offsets they are not
        # (rebuilt from Python: pyarrow 26.0.1's cast of a list view makes an invalid array)
        lists = pa.array(lists.to_pylist(), pa.large_list(t.value_type))
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)) or \
            not pa.types.is_integer(lists.type.value_type):
        raise InputError(f"entry_ids: lists of integer entry ids are needed (list<int32>, as "
                         f"the curated parts hold), not {t}")
    if lists.null_count:  # a caption with no list: no match
        lists = pa.array([x if x is not None else [] for x in lists.to_pylist()],
                         pa.list_(pa.int32()))
    if lists.values.null_count:
        raise InputError("entry_ids: a null id in a caption's list; give entry ids only")
    offsets = lists.offsets.to_numpy().astype(np.int64)
    ids = lists.values.to_numpy(zero_copy_only=False).astype(np.int64)
    if len(offsets) and offsets[0]:
        ids = ids[offsets[0]:]
        offsets = offsets - offsets[0]
    prob = np.asarray(prob, np.float64)
    used = ids[:int(offsets[-1])] if len(offsets) else ids[:0]
    if used.size and (int(used.min()) < 0 or int(used.max()) >= prob.size):
        raise InputError(f"entry_ids: ids run from {int(used.min())} to {int(used.max())}, "
                         f"but prob holds {prob.size} entries; give the probabilities of the "
                         "metadata the ids index")
    k = _key_array(keys)
    if k.size != len(lists):
        raise InputError(f"keys: {k.size} keys for {len(lists)} captions; give one per caption")
    from .config import whole

    if not 0 <= whole("seed", seed) < 2**64:
        raise ConfigError(f"seed must be in [0, 2**64), not {seed!r}")
    out = np.zeros(len(lists), np.uint8)
    keep_range(used.astype(np.int32), offsets, k, prob, np.uint64(int(seed)), out)
    return out.astype(bool)


def _key_array(keys) -> np.ndarray:
    """uint64 keys of :func:`keep`: uint64 as they are, Python or NumPy
    integers as their two's complement (as :func:`key_hashes` gives them),
    strings hashed."""
    if isinstance(keys, np.ndarray) and keys.dtype == np.uint64:
        return keys
    return key_hashes(keys, where="keys")


def _int_keys(seq: list, where: str, first_row: int) -> np.ndarray:
    """Python or NumPy integer keys as their 64-bit two's complement; one
    outside [-2**63, 2**64) has none (it would share another key's draws)."""
    for i, x in enumerate(seq):
        if not -2**63 <= int(x) < 2**64:
            raise InputError(f"{where}: row {first_row + i} is {int(x)}, outside 64 bits "
                             "(-2**63 to 2**64 - 1); give keys that fit, or strings")
    return np.array([int(x) & 0xFFFFFFFFFFFFFFFF for x in seq], np.uint64)
