"""Host-side construction of the flat word-level trie (numba, CPU only).

Inputs are arrays only: the vocabulary of distinct entry tokens as offsets +
bytes, and each entry as a run of token ids (CSR). Outputs are the flat arrays
that ``routines.match_caption`` walks:

* ``vslots`` (uint64, power-of-two size): vocabulary hash table;
* ``ekeys`` / ``evals`` (uint64 / int32): hash table of the edges below depth 1
  (node << 32 | token) -> child; root edges are implicit (child = token + 1);
* ``hasch`` (uint8 per node): the node has children;
* ``node_of_entry`` (int64 per entry, -1 for entries that cannot match), from
  which the caller builds the terminal CSR (``toff``, ``tids``).
"""

import numba
import numpy as np

from .routines import EMPTY_EDGE, build
from .targets import cpu_jit

R = build(cpu_jit)
fnv1a, byte_class, edge_slot = R.fnv1a, R.byte_class, R.edge_slot


@numba.njit(cache=True)
def fill_vocab_table(voff, vbytes, vslots):
    mask = np.uint64(vslots.size - 1)
    for t in range(voff.size - 1):
        h = fnv1a(vbytes, voff[t], voff[t + 1])
        i = h & mask
        while vslots[i] != 0:
            i = (i + np.uint64(1)) & mask
        vslots[i] = ((h >> np.uint64(32)) << np.uint64(32)) | np.uint64(t + 1)


@numba.njit(cache=True)
def token_kinds(voff, vbytes):
    """Per vocabulary token: 2 when no spaced caption holds it (a \\t, \\n or
    \\r, or a wrapped character , . ; : ? ! ` that is not alone), 1 for a lone
    wrapped character, 0 otherwise."""
    n = voff.size - 1
    kind = np.zeros(n, np.uint8)
    for t in range(n):
        a = voff[t]
        b = voff[t + 1]
        for k in range(a, b):
            c = byte_class(vbytes[k])
            if c == 1 or (c == 2 and b - a > 1):
                kind[t] = 2
                break
            if c == 2:
                kind[t] = 1
    return kind


@numba.njit(cache=True)
def matchable_entries(eoff, etok, kind):
    """1 for an entry some caption can match: none of its tokens is of kind 2
    and no two lone wrapped characters follow each other (spacing() always
    puts an empty token between them)."""
    n = eoff.size - 1
    ok = np.ones(n, np.uint8)
    for e in range(n):
        prev = 0
        for k in range(eoff[e], eoff[e + 1]):
            c = kind[etok[k]]
            if c == 2 or (c == 1 and prev == 1):
                ok[e] = 0
                break
            prev = c
    return ok


@numba.njit(cache=True)
def insert_entries(eoff, etok, ok, n_vocab, ekeys, evals):
    """Insert every entry with ok[i] != 0; return (node_of_entry, hasch, n_nodes)."""
    emask = np.uint64(ekeys.size - 1)
    n_entries = eoff.size - 1
    node_of_entry = np.full(n_entries, -1, np.int64)
    max_nodes = n_vocab + 1 + (etok.size - n_entries) + 1
    hasch = np.zeros(max_nodes, np.uint8)
    next_node = n_vocab + 1
    for e in range(n_entries):
        if ok[e] == 0:
            continue
        a = eoff[e]
        b = eoff[e + 1]
        node = np.int64(etok[a]) + 1
        for k in range(a + 1, b):
            tid = np.int64(etok[k])
            key = (np.uint64(node) << np.uint64(32)) | np.uint64(tid)
            i = edge_slot(node, tid, emask)
            while ekeys[i] != key and ekeys[i] != EMPTY_EDGE:
                i = (i + np.uint64(1)) & emask
            if ekeys[i] == EMPTY_EDGE:
                ekeys[i] = key
                evals[i] = next_node
                hasch[node] = 1
                node = next_node
                next_node += 1
            else:
                node = np.int64(evals[i])
        node_of_entry[e] = node
    return node_of_entry, hasch[:next_node].copy(), next_node
