"""Worldwide (MetaCLIP 2) matching: walks that may start inside a word.

MetaCLIP 2 pads an entry with a space only on a side whose character is not
"CJK or similar" (CJK ideographs, Thai, Lao, Burmese, Khmer, Tibetan,
punctuation), strips the caption (Python whitespace) and applies MetaCLIP's
``spacing``. Entries padded on both sides still match as whole tokens and go to
the word-level trie of ``routines.py``; every other entry goes, in its padded
byte form, into a byte-level trie walked from *every character* of the spaced
caption (the spaced text is read through a cursor, never built).

``build(jit)`` returns the device-safe routines (same rules as routines.py);
the host-side builder is ``trie_build.insert_patterns`` (numba, CPU).

Cursor over the spaced caption ``" " + M + " "`` of raw bytes [start, end):
``c = 4 * (p + 1) + k`` with ``p`` in ``start - 1 .. end`` (``start - 1`` and
``end`` are the two padding spaces) and ``k`` the byte (0..2) of a wrapped
character's expansion ``" c "``.
"""

from types import SimpleNamespace

import numpy as np

from .routines import build as build_routines

EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)


def build(jit, R=None):
    """The worldwide routines; ``R`` is routines.build(jit) when already made."""
    R = R or build_routines(jit)
    byte_class, mix64 = R.byte_class, R.mix64

    @jit
    def py_space(cp):
        """Python's str.isspace() for one code point (what str.strip() removes)."""
        if cp <= 32:
            return (9 <= cp <= 13) or (28 <= cp <= 32)
        if cp < 0x85:
            return False
        return (cp == 0x85 or cp == 0xA0 or cp == 0x1680 or (0x2000 <= cp <= 0x200A)
                or cp == 0x2028 or cp == 0x2029 or cp == 0x202F or cp == 0x205F
                or cp == 0x3000)

    @jit
    def decode_at(buf, p):
        """(code point, byte length) of the valid UTF-8 character at p."""
        b = np.int64(buf[p])
        if b < 0x80:
            return b, 1
        if b < 0xE0:
            return ((b & 0x1F) << 6) | (np.int64(buf[p + 1]) & 0x3F), 2
        if b < 0xF0:
            return (((b & 0x0F) << 12) | ((np.int64(buf[p + 1]) & 0x3F) << 6)
                    | (np.int64(buf[p + 2]) & 0x3F)), 3
        return (((b & 0x07) << 18) | ((np.int64(buf[p + 1]) & 0x3F) << 12)
                | ((np.int64(buf[p + 2]) & 0x3F) << 6) | (np.int64(buf[p + 3]) & 0x3F)), 4

    @jit
    def strip_bounds(buf, start, end):
        """[s, e) of the caption without Python whitespace at either end."""
        s = start
        while s < end:
            cp, ln = decode_at(buf, s)
            if not py_space(cp):
                break
            s += ln
        e = end
        while e > s:
            q = e - 1
            while q > s and (buf[q] & 0xC0) == 0x80:
                q -= 1
            cp, ln = decode_at(buf, q)
            if not py_space(cp):
                break
            e = q
        return s, e

    @jit
    def vbyte(buf, start, end, c):
        p = (c >> 2) - 1
        if p < start or p >= end:
            return 32
        b = buf[p]
        cl = byte_class(b)
        if cl == 1:
            return 32
        if cl == 2 and (c & 3) != 1:
            return 32
        return b

    @jit
    def vnext(buf, start, end, c):
        p = (c >> 2) - 1
        if p >= start and p < end and (c & 3) < 2 and byte_class(buf[p]) == 2:
            return c + 1
        return (p + 2) << 2

    @jit
    def bchild(node, b, broot, bkeys, bvals, bmask):
        if node == 0:
            return np.int64(broot[b])
        key = (np.uint64(node) << np.uint64(8)) | np.uint64(b)
        i = mix64(key) & bmask
        while True:
            k = bkeys[i]
            if k == key:
                return np.int64(bvals[i])
            if k == EMPTY:
                return -1
            i = (i + np.uint64(1)) & bmask

    @jit
    def match_bytes(buf, start, end, broot, bkeys, bvals, bmask, btoff, btids, bhasch,
                    out, n, cap):
        """Ids of the byte-trie patterns in the spaced caption buf[start:end]
        (appended to out[n:cap], counted past cap, as walk.emit does)."""
        if btids.size == 0:
            return n
        c = start << 2  # p = start - 1: the leading space
        last = (end + 2) << 2  # one past p = end: the trailing space
        while c < last:
            b0 = vbyte(buf, start, end, c)
            if (b0 & 0xC0) != 0x80:
                node = 0
                cc = c
                while cc < last:
                    node = bchild(node, vbyte(buf, start, end, cc), broot, bkeys, bvals, bmask)
                    if node < 0:
                        break
                    for k in range(btoff[node], btoff[node + 1]):
                        if n < cap:
                            out[n] = btids[k]
                        n += 1
                    if bhasch[node] == 0:
                        break
                    cc = vnext(buf, start, end, cc)
            c = vnext(buf, start, end, c)
        return n

    match_caption = R.match_caption

    @jit
    def match_all(buf, start, end, wtrie, btrie, strip, out, n, cap):
        """Every (not yet distinct) entry id of caption buf[start:end]: the
        word-trie walk, then the byte-trie walk, on the stripped caption when
        ``strip`` (MetaCLIP 2). The kernels and the CPU engine call this."""
        if strip != 0:
            start, end = strip_bounds(buf, start, end)
        # Unpacked by name, not with *: numba inlines no call with *args.
        vtag, vrec, vn, voff, vbytes, cbits, ctag, crec, tlist = wtrie
        broot, bkeys, bvals, bmask, btoff, btids, bhasch = btrie
        n = match_caption(buf, start, end, vtag, vrec, vn, voff, vbytes, cbits, ctag, crec, tlist,
                          out, n, cap)
        return match_bytes(buf, start, end, broot, bkeys, bvals, bmask, btoff, btids, bhasch,
                           out, n, cap)

    return SimpleNamespace(py_space=py_space, decode_at=decode_at, strip_bounds=strip_bounds,
                           vbyte=vbyte, vnext=vnext, bchild=bchild, match_bytes=match_bytes,
                           match_all=match_all)
