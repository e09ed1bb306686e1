"""gpucurate.kernels: the array layer.

Knows byte buffers, offsets, CSR tries and entry ids, nothing of captions,
files or configuration. ``routines`` composes the single source of every hot
routine, written by topic (``hashing``, ``scan``, ``walk``, ``sort``,
``draw``, ``utf8``; constants in ``consts``); ``cpu`` compiles it with
``numba.njit`` and drives it over caption ranges; ``cuda`` compiles it with
``numba.cuda.jit(device=True)`` and launches it as kernels (imported only when
a GPU path is used); ``trie_build`` builds the flat trie arrays on the host;
``lid`` predicts a fastText language-ID model's labels (CPU only).
"""

if __name__ != "gpucurate.kernels":  # e.g. `import kernels` from a source checkout
    raise ImportError("this package is gpucurate.kernels; import it under that name (the "
                      "numba cache records the module name, so two names would share it)")
