"""The walk: the trie's tables (their layout below) and the matching of one
caption's tokens against them; one source for every target, composed by
``routines.build``."""

import numpy as np

from .consts import LEN_MASK, LOW32, SHIFT32, SHIFT56


def build(R, jit, jit_inline, prefetch, ahead):
    """The trie-walk routines, compiled with ``jit`` (or ``jit_inline``), into ``R``."""
    next_token_hot = R.next_token_hot

    # Vocabulary table: ``vn`` slots, open addressing with linear probing from
    # slot ((hash & 0xFFFFFFFF) * vn) >> 32. ``vtag[i]`` is the tag (see
    # hash_tag) of the token in slot i, 0 when empty, so that probes read one
    # byte per slot; ``vrec[4 * i:]`` is its record of 4 words:
    #   word 0, 1: the token's key (lo, hi);
    #   word 2:    (token id + 1) | length << 32 | lg << 56   (0: empty slot);
    #   word 3:    term | base << 32, the depth-1 node of the token.
    # A node is (term, base, lg): its entries (``term``: 0 none, odd: the one
    # entry id term >> 1, even: a list tlist[i] = count, tlist[i + 1:...] with
    # i = (term >> 1) - 1) and its children, a table of 2**lg slots from slot
    # ``base`` (lg == 0: no children), probed linearly from (hash >> 32) &
    # (2**lg - 1). Slot i has the tag ctag[i] of its token (0: empty) and the
    # record crec[2 * i:] of 2 words below. Before the table, a node's filter
    # is read: bits 4 * base + ((hash >> 32) & (4 * 2**lg - 1)) of ``cbits``
    # (bit k is bit k & 7 of byte k >> 3) are set for the node's children.
    #   word 0: (token id + 1) | lg << 56 of the child (0: empty slot);
    #   word 1: term | base << 32 of the child.
    @jit
    def hash_tag(h):
        """The 8-bit tag (1..255) of a token hash: bits 56..63, 0 read as 1."""
        g = h >> SHIFT56
        if g == 0:
            g = np.uint64(1)
        return np.uint8(g)

    @jit_inline
    def vocab_slot(h, vn):
        """The home slot, among ``vn``, of the token with hash ``h``."""
        return ((h & LOW32) * vn) >> SHIFT32

    @jit_inline
    def filter_bit(base, lg, h):
        """The bit of ``cbits`` that the child with hash ``h`` sets in the
        filter of the node whose children table is (base, lg)."""
        return base * np.uint64(4) + ((h >> SHIFT32) & ((np.uint64(4) << lg) - np.uint64(1)))

    @jit
    def lookup_token(buf, start, stop, lo, hi, h, vtag, vrec, vn, voff, vbytes):
        """Record index in vrec of the token buf[start:stop] with key
        (lo, hi, h), or -1 when it is no entry's token."""
        # Indices are unsigned where they can be: numba then emits no
        # negative-index wraparound.
        n = stop - start
        ln = np.uint64(n)
        g = hash_tag(h)
        i = vocab_slot(h, vn)
        while True:
            t = vtag[i]
            if t == 0:
                return -1
            if t == g:
                r = i * np.uint64(4)
                x = vrec[r + np.uint64(2)]
                if vrec[r] == lo and ((x >> SHIFT32) & LEN_MASK) == ln and \
                        vrec[r + np.uint64(1)] == hi:
                    if n <= 16:
                        return np.int64(i)
                    a = np.uint64(voff[(x & LOW32) - np.uint64(1)])
                    m = ln - np.uint64(16)
                    k = np.uint64(0)
                    while k < m and vbytes[a + k] == buf[np.uint64(start) + k]:
                        k += np.uint64(1)
                    if k == m:
                        return np.int64(i)
            i += np.uint64(1)
            if i == vn:
                i = np.uint64(0)

    @jit
    def child_slot(base, lg, tidp, h, cbits, ctag, crec):
        """Index in crec of the child along token id ``tidp - 1`` of the node
        whose table is (base, lg), or -1. ``h`` is the token's hash."""
        k = filter_bit(base, lg, h)
        if (cbits[k >> np.uint64(3)] >> np.uint8(k & np.uint64(7))) & np.uint8(1) == 0:
            return -1
        mask = (np.uint64(1) << lg) - np.uint64(1)
        g = hash_tag(h)
        j = (h >> SHIFT32) & mask
        while True:
            i = base + j
            t = ctag[i]
            if t == 0:
                return -1
            if t == g and (crec[i * np.uint64(2)] & LOW32) == tidp:
                return np.int64(i * np.uint64(2))
            j = (j + np.uint64(1)) & mask

    @jit
    def emit(term, tlist, out, n, cap):
        """Append the entry ids of a node's ``term`` to out[n:cap]; return the
        new n. Ids past ``cap`` are counted, not written."""
        if term == 0:
            return n
        if term & np.uint64(1):
            if n < cap:
                out[n] = np.int32(term >> np.uint64(1))
            return n + 1
        # A node where several entries end: its list in tlist, copied up to
        # cap. Unsigned indices: with numba's negative-index wraparound LLVM
        # vectorized this copy into gathers and scatters whose constants every
        # call of the walk paid for.
        i = (term >> np.uint64(1)) - np.uint64(1)
        count = np.int64(tlist[i])
        k = 0
        while k < count and n < cap:
            out[np.uint64(n)] = tlist[i + np.uint64(1 + k)]
            n += 1
            k += 1
        return n + (count - k)

    @jit
    def match_caption(buf, start, end, vtag, vrec, vn, voff, vbytes, cbits, ctag, crec,
                      tlist, out, n, cap):
        """Every (not yet distinct) entry id matching caption buf[start:end].

        Walks the trie from each token of the caption. Writes ids into
        out[n:cap] and returns n plus the number of ids found, so a call with
        ``cap == n`` only counts.
        """
        mpos = start - 64
        d = np.uint64(0)
        w = np.uint64(0)
        a, b, nxt, lo, hi, h, mpos, d, w = next_token_hot(buf, start << 1, end, mpos, d, w)
        # Each token is read and looked up once. The walks from every start
        # advance together to depth 2: (plg, pbase) is the children table of
        # the previous token's depth-1 node (plg == 0: none), probed with the
        # current token. Deeper walks (rare) read the following tokens again.
        # Where the target prefetches (``ahead``: the CPU), the following token
        # is read one step ahead and the table lines its lookup and its probe's
        # filter will read are prefetched (+3-6% on one CPU thread); elsewhere
        # (CUDA) it is read after this one, which keeps fewer registers live.
        plg = np.uint64(0)
        pbase = np.uint64(0)
        while True:
            cpos = mpos
            cd = d
            cw = w
            na = end
            nb = end
            nn = -1
            nlo = np.uint64(0)
            nhi = np.uint64(0)
            nh = np.uint64(0)
            if ahead and nxt >= 0:
                na, nb, nn, nlo, nhi, nh, mpos, d, w = next_token_hot(buf, nxt, end, mpos, d, w)
                ni = vocab_slot(nh, vn)
                prefetch(vtag, ni)
                prefetch(vrec, ni * np.uint64(4))
            r = lookup_token(buf, a, b, lo, hi, h, vtag, vrec, vn, voff, vbytes)
            x = np.uint64(0)
            y = np.uint64(0)
            if r >= 0:
                ru = np.uint64(r) * np.uint64(4)
                x = vrec[ru + np.uint64(2)]
                y = vrec[ru + np.uint64(3)]
                if plg != 0:
                    c = child_slot(pbase, plg, x & LOW32, h, cbits, ctag, crec)
                    if c >= 0:
                        cu = np.uint64(c)
                        cx = crec[cu]
                        cy = crec[cu + np.uint64(1)]
                        n = emit(cy & LOW32, tlist, out, n, cap)
                        lg = cx >> SHIFT56
                        t = nxt
                        while lg != 0 and t >= 0:
                            a, b, t2, lo, hi, h2, cpos, cd, cw = next_token_hot(buf, t, end, cpos,
                                                                                cd, cw)
                            r2 = lookup_token(buf, a, b, lo, hi, h2, vtag, vrec, vn, voff,
                                              vbytes)
                            if r2 < 0:
                                break
                            c = child_slot(cy >> SHIFT32, lg,
                                           vrec[np.uint64(r2) * np.uint64(4) + np.uint64(2)]
                                           & LOW32, h2, cbits, ctag, crec)
                            if c < 0:
                                break
                            cu = np.uint64(c)
                            cx = crec[cu]
                            cy = crec[cu + np.uint64(1)]
                            n = emit(cy & LOW32, tlist, out, n, cap)
                            lg = cx >> SHIFT56
                            t = t2
                n = emit(y & LOW32, tlist, out, n, cap)
            if nxt < 0:
                break
            plg = x >> SHIFT56
            pbase = y >> SHIFT32
            if not ahead:
                na, nb, nn, nlo, nhi, nh, mpos, d, w = next_token_hot(buf, nxt, end, mpos, d, w)
            elif plg != 0:
                prefetch(cbits, filter_bit(pbase, plg, nh) >> np.uint64(3))
            a = na
            b = nb
            nxt = nn
            lo = nlo
            hi = nhi
            h = nh
        return n

    R.__dict__.update(
        hash_tag=hash_tag, vocab_slot=vocab_slot, filter_bit=filter_bit,
        lookup_token=lookup_token, child_slot=child_slot, emit=emit,
        match_caption=match_caption)
