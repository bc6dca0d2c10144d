"""Paired statistics of the cascade paper: t-test where the paired differences look normal, else Wilcoxon."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedTest", "paired_test", "mean_sd"]


@dataclass(frozen=True)
class PairedTest:
    """Outcome of one paired comparison.

    Attributes:
        test: ``"paired t"``, ``"Wilcoxon"``, ``"identical"`` (all differences zero, p = 1) or
            ``"too few"`` (fewer than 3 complete pairs, no test).
        p_value: two-sided p (NaN without a test).
        shapiro_p: Shapiro-Wilk p of the paired differences, which chose the test (NaN without one).
        n: number of complete pairs used.
    """

    test: str
    p_value: float
    shapiro_p: float
    n: int

    def __str__(self) -> str:
        if self.test == "too few":
            return f"n/a (n={self.n})"
        return f"p={self.p_value:.3g} ({self.test})"


def paired_test(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> PairedTest:
    """Compare paired samples ``a`` and ``b`` (pairs with a NaN are dropped).

    The differences ``a - b`` are tested for normality with Shapiro-Wilk; at p >= ``alpha`` the paired t-test
    is used, else the Wilcoxon signed-rank test (scipy's defaults: two-sided, zero differences dropped).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    differences = a[keep] - b[keep]
    n = int(differences.size)
    if n < 3:
        return PairedTest("too few", np.nan, np.nan, n)
    if np.all(differences == 0):
        return PairedTest("identical", 1.0, np.nan, n)
    if np.ptp(differences) == 0:  # a constant non-zero shift: no variance for Shapiro or t
        return PairedTest("Wilcoxon", float(stats.wilcoxon(differences).pvalue), np.nan, n)
    shapiro_p = float(stats.shapiro(differences).pvalue)
    if shapiro_p >= alpha:
        return PairedTest("paired t", float(stats.ttest_rel(a[keep], b[keep]).pvalue), shapiro_p, n)
    return PairedTest("Wilcoxon", float(stats.wilcoxon(differences).pvalue), shapiro_p, n)


def mean_sd(values: np.ndarray) -> tuple[float, float, int]:
    """NaN-ignoring mean, sample standard deviation (ddof 1; 0 for one value) and count."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.nan, np.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)
