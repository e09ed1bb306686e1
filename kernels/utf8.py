"""The input check: well-formed UTF-8; one source for every target, composed by
``routines.build``."""


def build(R, jit, jit_inline):
    """The input-check routines, compiled with ``jit`` (or ``jit_inline``), into ``R``."""

    @jit
    def utf8_invalid(buf, p, end):
        """1 when buf[p:end] is not well-formed UTF-8 (RFC 3629: no overlongs,
        no surrogates, nothing above U+10FFFF, no truncated sequence), else 0."""
        while p < end:
            b = buf[p]
            if b < 0x80:
                p += 1
                continue
            if 0xC2 <= b <= 0xDF:
                n = 1
                lo, hi = 0x80, 0xBF
            elif 0xE0 <= b <= 0xEF:
                n = 2
                lo = 0xA0 if b == 0xE0 else 0x80
                hi = 0x9F if b == 0xED else 0xBF
            elif 0xF0 <= b <= 0xF4:
                n = 3
                lo = 0x90 if b == 0xF0 else 0x80
                hi = 0x8F if b == 0xF4 else 0xBF
            else:
                return 1
            if p + n >= end:
                return 1
            c = buf[p + 1]
            if c < lo or c > hi:
                return 1
            for k in range(2, n + 1):
                c = buf[p + k]
                if c < 0x80 or c > 0xBF:
                    return 1
            p += n + 1
        return 0

    R.__dict__.update(
        utf8_invalid=utf8_invalid)
