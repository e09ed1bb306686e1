"""Host-side construction of the flat word-level trie (numba, CPU only).

Inputs are arrays only: the vocabulary of distinct entry tokens as offsets +
bytes, and each entry as a run of token ids (CSR). Outputs are the flat arrays
that ``walk.match_caption`` walks (their layout is described there):

* ``vtag`` (uint8) / ``vrec`` (uint64, 4 words per slot): vocabulary table,
  a tag byte per slot and a record holding the token's first 16 bytes, id,
  length and depth-1 node;
* ``cbits`` (uint8, 4 bits per slot) / ``ctag`` (uint8) / ``crec`` (uint64, 2
  words per slot): the children of every node, one open-addressing table per
  node (a filter of its children's hashes, then each slot a tag byte and a
  record holding the child's node);
* ``tlist`` (int32): entry-id lists of the nodes where several entries end.

Construction goes through a temporary global edge table ((node << 32 | token)
-> child, built by :func:`insert_entries`), then :func:`layout` lays the nodes
out in the tables.
"""

import numba
import numpy as np

from .routines import LOW32, build
from .targets import cpu_jit

R = build(cpu_jit)
byte_class, token_key, mix64, hash_tag, vocab_slot, filter_bit = (
    R.byte_class, R.token_key, R.mix64, R.hash_tag, R.vocab_slot, R.filter_bit)

EMPTY_EDGE = np.uint64(0xFFFFFFFFFFFFFFFF)


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
def edge_insert(ekeys, evals, key, new_node):
    """The child stored under ``key`` in an open-addressing edge table, storing
    ``new_node`` there first when the key is absent: (child, inserted)."""
    mask = np.uint64(ekeys.size - 1)
    i = mix64(key) & mask
    while ekeys[i] != key and ekeys[i] != EMPTY_EDGE:
        i = (i + np.uint64(1)) & mask
    if ekeys[i] == EMPTY_EDGE:
        ekeys[i] = key
        evals[i] = new_node
        return np.int64(new_node), True
    return np.int64(evals[i]), False


@numba.njit(cache=True)
def insert_entries(eoff, etok, ok, n_vocab, ekeys, evals):
    """Insert every entry with ok[i] != 0 into the temporary edge table
    (root edges are implicit: the child of the root along token t is t + 1);
    return (node_of_entry, n_nodes)."""
    n_entries = eoff.size - 1
    node_of_entry = np.full(n_entries, -1, np.int64)
    next_node = n_vocab + 1
    for e in range(n_entries):
        if ok[e] == 0:
            continue
        node = np.int64(etok[eoff[e]]) + 1
        for k in range(eoff[e] + 1, eoff[e + 1]):
            key = (np.uint64(node) << np.uint64(32)) | np.uint64(etok[k])
            node, inserted = edge_insert(ekeys, evals, key, next_node)
            next_node += inserted
        node_of_entry[e] = node
    return node_of_entry, next_node


@numba.njit(cache=True)
def insert_patterns(poff, pbytes, bkeys, bvals):
    """Byte trie of patterns pbytes[poff[i]:poff[i+1]] (worldwide matching):
    root children direct in ``broot``, deeper edges (node << 8 | byte) in the
    edge table. Returns (broot int32[256], node_of_pattern, hasch, n_nodes)."""
    broot = np.full(256, -1, np.int32)
    n_pat = poff.size - 1
    hasch = np.zeros(1 + (poff[-1] - poff[0]) + 1, np.uint8)
    node_of = np.empty(n_pat, np.int64)
    nxt = 1
    for i in range(n_pat):
        node = 0
        for q in range(poff[i], poff[i + 1]):
            b = pbytes[q]
            if node == 0:
                if broot[b] < 0:
                    broot[b] = nxt
                    hasch[0] = 1
                    nxt += 1
                node = np.int64(broot[b])
                continue
            key = (np.uint64(node) << np.uint64(8)) | np.uint64(b)
            child, inserted = edge_insert(bkeys, bvals, key, nxt)
            if inserted:
                hasch[node] = 1
                nxt += 1
            node = child
        node_of[i] = node
    return broot, node_of, hasch[:nxt].copy(), nxt


@numba.njit(cache=True)
def layout(voff, vbytes, node_of_entry, n_nodes, ekeys, evals, vn):
    """The final tables (vtag, vrec, cbits, ctag, crec, tlist) of the trie held by the temporary
    edge table; ``vn`` vocabulary slots."""
    n_vocab = voff.size - 1
    # Keys of the vocabulary tokens.
    w0s = np.empty(n_vocab, np.uint64)
    w1s = np.empty(n_vocab, np.uint64)
    hs = np.empty(n_vocab, np.uint64)
    for t in range(n_vocab):
        a, b, h = token_key(vbytes, voff[t], voff[t + 1])
        w0s[t] = a
        w1s[t] = b
        hs[t] = h

    # Entry ids per node: term = 2 * id + 1 for one, a tlist list for several.
    cnt = np.zeros(n_nodes, np.int64)
    for e in range(node_of_entry.size):
        if node_of_entry[e] >= 0:
            cnt[node_of_entry[e]] += 1
    lstart = np.full(n_nodes, -1, np.int64)
    size = 0
    for v in range(n_nodes):
        if cnt[v] > 1:
            lstart[v] = size
            size += cnt[v] + 1
    tlist = np.zeros(max(size, 1), np.int32)
    term = np.zeros(n_nodes, np.uint64)
    for e in range(node_of_entry.size):
        v = node_of_entry[e]
        if v < 0:
            continue
        if cnt[v] == 1:
            term[v] = np.uint64(2 * e + 1)
        else:
            i = lstart[v]
            tlist[i] += 1
            tlist[i + tlist[i]] = e
            term[v] = np.uint64(2 * (i + 1))

    # Children tables: 2**lg slots per node with children, lg >= 1 and at
    # least twice as many slots as children.
    nch = np.zeros(n_nodes, np.int64)
    for k in range(ekeys.size):
        if ekeys[k] != EMPTY_EDGE:
            nch[np.int64(ekeys[k] >> np.uint64(32))] += 1
    lg = np.zeros(n_nodes, np.uint64)
    base = np.zeros(n_nodes, np.uint64)
    total = 0
    for v in range(n_nodes):
        if nch[v] > 0:
            g = 1
            while (1 << g) < 2 * nch[v]:
                g += 1
            lg[v] = g
            base[v] = total
            total += 1 << g
    ctag = np.zeros(max(total, 1), np.uint8)
    cbits = np.zeros(max(total // 2, 1), np.uint8)
    crec = np.zeros(2 * max(total, 1), np.uint64)
    for k in range(ekeys.size):
        key = ekeys[k]
        if key == EMPTY_EDGE:
            continue
        p = np.int64(key >> np.uint64(32))
        tid = np.int64(key & LOW32)
        c = np.int64(evals[k])
        hh = hs[tid] >> np.uint64(32)
        kb = np.int64(filter_bit(base[p], lg[p], hs[tid]))
        cbits[kb >> 3] |= np.uint8(1 << (kb & 7))
        mask = (np.uint64(1) << lg[p]) - np.uint64(1)
        j = hh & mask
        while ctag[np.int64(base[p] + j)] != 0:
            j = (j + np.uint64(1)) & mask
        ctag[np.int64(base[p] + j)] = hash_tag(hs[tid])
        s = 2 * np.int64(base[p] + j)
        crec[s] = np.uint64(tid + 1) | (lg[c] << np.uint64(56))
        crec[s + 1] = term[c] | (base[c] << np.uint64(32))

    # Vocabulary table.
    vtag = np.zeros(vn, np.uint8)
    vrec = np.zeros(4 * vn, np.uint64)
    uvn = np.uint64(vn)
    for t in range(n_vocab):
        i = vocab_slot(hs[t], uvn)
        while vtag[i] != 0:
            i += np.uint64(1)
            if i == uvn:
                i = np.uint64(0)
        vtag[i] = hash_tag(hs[t])
        r = 4 * np.int64(i)
        v = t + 1
        vrec[r] = w0s[t]
        vrec[r + 1] = w1s[t]
        vrec[r + 2] = (np.uint64(t + 1) | (np.uint64(voff[t + 1] - voff[t]) << np.uint64(32))
                       | (lg[v] << np.uint64(56)))
        vrec[r + 3] = term[v] | (base[v] << np.uint64(32))
    return vtag, vrec, cbits, ctag, crec, tlist, total
