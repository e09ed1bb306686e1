"""The t rules: MetaCLIP 1's t (given, or MetaCLIP 2's ``p_to_t`` of a tail
fraction) and MetaCLIP 2's t per language."""

from __future__ import annotations

import numpy as np

from ..config import CurateConfig
from ..errors import ConfigError
from .layout import ALL


def p_to_t(counts, p: float) -> int:
    """MetaCLIP 2's ``p_to_t``: sort the counts ascending (zeros included), take
    the cumulative share of the total at each position; t is the count at the
    position whose share is nearest ``p`` (the first such position on ties)."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    total = c.sum()
    if total <= 0:
        raise ConfigError("--tail-fraction: the pool matched no entry, so no t can be derived")
    share = np.cumsum(c) / total
    return int(c[int(np.argmin(np.abs(share - p)))])


def t_to_p(counts, t: float) -> float:
    """MetaCLIP 2's ``t_to_p``: the share of all matches held by entries with count < t."""
    c = np.asarray(counts, dtype=np.float64)
    return float(c[c < t].sum() / c.sum())


def check_t_lang(cfg: CurateConfig, langs) -> None:
    """--t-lang names languages of the worldwide metadata (checked before any work)."""
    unknown = sorted(set(dict(cfg.t_lang or ())) - set(langs))
    if unknown:
        raise ConfigError(f"--t-lang {unknown[0]}=...: no metadata list {unknown[0]}.json in "
                          f"{cfg.worldwide} (its languages: {', '.join(sorted(langs))})")


def language_t(cfg: CurateConfig, counts: dict, kept: str = "pass 1 is kept") -> dict:
    """t per language. MetaCLIP 1: --t, or p_to_t(counts, --tail-fraction).
    Worldwide (MetaCLIP 2): --t is t_en; p = t_to_p(counts_en, t_en) and every
    other language gets p_to_t(counts_lang, p) (or p = --tail-fraction for all);
    --t-lang LANG=T overrides one language. A language with no match gets no t
    (nothing of it is balanced). ``kept``: what an error says is kept of
    the run (curate: its pass 1; balance checks before writing anything)."""
    if ALL in counts:
        t = cfg.t if cfg.t is not None else p_to_t(counts[ALL], cfg.tail_fraction)
        if t < 1:
            raise ConfigError(f"--tail-fraction {cfg.tail_fraction} gives t = {t}, below 1; "
                              f"run again with a larger fraction or with --t ({kept})")
        return {ALL: int(t)}
    check_t_lang(cfg, counts)
    over = dict(cfg.t_lang or ())
    if cfg.t is not None:
        if "en" not in counts:
            raise ConfigError("--t sets t for en, but the worldwide metadata has no en.json; "
                              "give --tail-fraction in place of --t (and --t-lang where wanted)")
        if counts["en"].sum() == 0:
            raise ConfigError("--t: no English caption matched, so p = t_to_p(counts_en, t) "
                              "is undefined; run again with --tail-fraction in place of --t "
                              f"(and --t-lang where wanted; {kept})")
        p = t_to_p(counts["en"], cfg.t)
    else:
        p = cfg.tail_fraction
    ts = {}
    for code, c in counts.items():
        if code in over:
            ts[code] = int(over[code])
        elif code == "en" and cfg.t is not None:
            ts[code] = int(cfg.t)
        elif c.sum() == 0:
            ts[code] = None
        else:
            ts[code] = p_to_t(c, p)
            if ts[code] < 1:
                raise ConfigError(f"language {code}: p = {p:.4g} gives t = {ts[code]}, below 1; "
                                  f"run again with --t-lang {code}=T ({kept})")
    return ts
