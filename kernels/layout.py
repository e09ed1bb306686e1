"""The order of the match tables' arrays: one contract, named once.

The kernels take the tables as one nested tuple, ``(word, byte, strip)``
(``TABLES``). ``WORD`` is the order of the word trie's arrays, the trailing
parameters of ``walk.match_caption``; ``BYTE`` the order of the byte
trie's, the trailing parameters of ``bytewalk.match_bytes``. The builders
(``gpucurate.trie.WordTrie.arrays``, ``gpucurate.bytetrie.ByteTrie.arrays``)
derive their tuples from these names; the walks unpack them in this order
(numba inlines no ``*args`` call, so the unpacking is written out, and
tests/test_layout.py holds each such place to these names).
"""

TABLES = ("word", "byte", "strip")

WORD = ("vtag", "vrec", "vn", "voff", "vbytes", "cbits", "ctag", "crec", "tlist")
BYTE = ("broot", "bkeys", "bvals", "bmask", "btoff", "btids", "bhasch")

# Positions the drivers read directly (numba takes a global int as a constant index).
BYTE_TIDS = BYTE.index("btids")
