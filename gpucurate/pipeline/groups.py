"""One caption per group (``--group-column``): the pinned choice and, after
pass 1, the chosen row of every group."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io import atomic_write_bytes, atomic_write_parquet
from .layout import OutputLayout


def choice_values(seed: int, groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The pinned draw that picks one caption per group: the caption with the
    smallest mix(mix(mix(seed) ^ group) ^ mix(key)) (ties: shard, then row)."""
    from ..kernels.keys import choice_values as cv

    out = np.empty(groups.size, np.uint64)
    cv(np.uint64(seed), groups, keys, out)
    return out


def write_group_choices(layout: OutputLayout, i: int, grp: list) -> None:
    """A shard's (group, choice, row) triples, batch parts concatenated."""
    g, c, r = ([np.concatenate(x) for x in zip(*grp)] if grp else
               [np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)])
    atomic_write_parquet(layout.pass1_groups(i), pa.table(
        {"group": pa.array(g, pa.uint64()), "choice": pa.array(c, pa.uint64()),
         "row": pa.array(r, pa.int64())}))


def choose_groups(layout: OutputLayout, plan) -> None:
    """After pass 1: the chosen row of every group, per shard (work/groups)."""
    g, c, sh, row = [], [], [], []
    for shard, _ in plan:
        t = pq.read_table(layout.pass1_groups(shard.index))
        g.append(t.column("group").to_numpy())
        c.append(t.column("choice").to_numpy())
        row.append(t.column("row").to_numpy())
        sh.append(np.full(t.num_rows, shard.index, np.int64))
    g, c, sh, row = (np.concatenate(x) for x in (g, c, sh, row))
    order = np.lexsort((row, sh, c, g))
    first = np.ones(order.size, bool)
    first[1:] = g[order][1:] != g[order][:-1]
    win = order[first]
    os.makedirs(layout.groups_dir, exist_ok=True)
    for shard, _ in plan:
        rows = np.sort(row[win][sh[win] == shard.index])
        buf = io.BytesIO()
        np.save(buf, rows)
        atomic_write_bytes(layout.groups(shard.index), buf.getvalue())
