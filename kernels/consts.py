"""The constants of the hot routines (hash mixing, the spacing rule's byte
classes, shifts and masks), shared by the routine modules and the table
builders; numba reads them as compile-time constants."""

import numpy as np

# FNV-1a, 64 bit.
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)

# splitmix64 finalizer constants.
MIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_M2 = np.uint64(0x94D049BB133111EB)

# Byte classes of the spacing rule, as bit masks over byte values < 64.
# Class 1 (turned into a space): \t \n \r and the space itself.
SPACE_MASK = np.uint64((1 << 9) | (1 << 10) | (1 << 13) | (1 << 32))
# Class 2 (wrapped in spaces): , . ; : ? ! (and the backtick, 96, tested apart).
WRAP_MASK = np.uint64((1 << 44) | (1 << 46) | (1 << 59) | (1 << 58) | (1 << 63) | (1 << 33))

LOW32 = np.uint64(0xFFFFFFFF)
BYTES_EVEN = np.uint64(0x00FF00FF00FF00FF)
PAIRS_EVEN = np.uint64(0x0000FFFF0000FFFF)
SHIFT11 = np.uint64(11)
SHIFT32 = np.uint64(32)
SHIFT56 = np.uint64(56)
SHIFT8 = np.uint64(8)
LEN_MASK = np.uint64(0xFFFFFF)
TWO_POW_M53 = 1.0 / 9007199254740992.0

# A caption's list of ids is sorted by a 4-, 8- or 16-input sorting network up
# to 16 ids, by insertion up to INSERTION_SORT_MAX, else by heapsort.
INSERTION_SORT_MAX = 24
