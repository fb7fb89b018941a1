"""Exact statistics for experiments: Welch's t-test and the chi-square sample-ratio check.

No floats: sums are integers, means and variances are `Fraction`s, and everything that needs a
square root, a logarithm or a special function is computed in `Decimal` at 50 significant
digits. The t and chi-square distributions come from the regularized incomplete beta and gamma
functions, evaluated with Lentz's continued fractions (Numerical Recipes, 6.2 and 6.4); the log
gamma function from Stirling's series after shifting the argument above 30. Results leave this
module as integers in micro-units (value x 1,000,000, rounded half away from zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from fractions import Fraction

PRECISION = 50
MICRO = 1_000_000
_TINY = Decimal("1e-60")
_EPSILON = Decimal("1e-35")
_MAX_ITERATIONS = 100_000
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
# Bernoulli numbers B2, B4, ... B20 for Stirling's series.
_BERNOULLI = (
    Fraction(1, 6),
    Fraction(-1, 30),
    Fraction(1, 42),
    Fraction(-1, 30),
    Fraction(5, 66),
    Fraction(-691, 2730),
    Fraction(7, 6),
    Fraction(-3617, 510),
    Fraction(43867, 798),
    Fraction(-174611, 330),
)


def _context() -> Context:
    return Context(prec=PRECISION)


def dec(value: Fraction | int) -> Decimal:
    """A Fraction or integer as a Decimal at the module's precision."""
    if isinstance(value, int):
        return Decimal(value)
    with localcontext(_context()):
        return Decimal(value.numerator) / Decimal(value.denominator)


def micro(value: Decimal | Fraction | int) -> int:
    """value x 1,000,000 as an integer, rounded half away from zero."""
    if isinstance(value, Fraction):
        scaled = value * MICRO
        whole, rest = divmod(abs(scaled.numerator), scaled.denominator)
        whole += 1 if 2 * rest >= scaled.denominator else 0
        return whole if scaled >= 0 else -whole
    with localcontext(_context()):
        return int((Decimal(value) * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- special functions ------------------------------------------------------------------------


def log_gamma(x: Decimal) -> Decimal:
    """ln Γ(x) for x > 0."""
    if x <= 0:
        raise ValueError("log_gamma needs a positive argument")
    with localcontext(_context()):
        shift = Decimal(0)
        while x < 30:
            shift += x.ln()
            x += 1
        series = (x - Decimal("0.5")) * x.ln() - x + (2 * _PI).ln() / 2
        power = x
        square = x * x
        for k, bernoulli in enumerate(_BERNOULLI, start=1):
            series += dec(bernoulli) / (2 * k * (2 * k - 1) * power)
            power *= square
        return series - shift


def _beta_fraction(a: Decimal, b: Decimal, x: Decimal) -> Decimal:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1, a - 1
    c = Decimal(1)
    d = 1 - qab * x / qap
    d = _TINY if abs(d) < _TINY else d
    d = 1 / d
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < _EPSILON:
            return h
    raise ArithmeticError("incomplete beta did not converge")


def regularized_beta(a: Decimal, b: Decimal, x: Decimal) -> Decimal:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if x <= 0:
        return Decimal(0)
    if x >= 1:
        return Decimal(1)
    with localcontext(_context()):
        front = (log_gamma(a + b) - log_gamma(a) - log_gamma(b) + a * x.ln() + b * (1 - x).ln()).exp()
        if x < (a + 1) / (a + b + 2):
            return front * _beta_fraction(a, b, x) / a
        return 1 - front * _beta_fraction(b, a, 1 - x) / b


def regularized_gamma_upper(a: Decimal, x: Decimal) -> Decimal:
    """Q(a, x) = 1 - P(a, x), the regularized upper incomplete gamma function, a > 0, x >= 0."""
    if x <= 0:
        return Decimal(1)
    with localcontext(_context()):
        front = (a * x.ln() - x - log_gamma(a)).exp()
        if x < a + 1:  # the series of P converges fast here
            term = total = 1 / a
            n = a
            for _ in range(_MAX_ITERATIONS):
                n += 1
                term *= x / n
                total += term
                if abs(term) < abs(total) * _EPSILON:
                    return 1 - total * front
            raise ArithmeticError("incomplete gamma series did not converge")
        b = x + 1 - a
        c = 1 / _TINY
        d = 1 / b
        h = d
        for i in range(1, _MAX_ITERATIONS):
            an = -i * (i - a)
            b += 2
            d = an * d + b
            d = _TINY if abs(d) < _TINY else d
            c = b + an / c
            c = _TINY if abs(c) < _TINY else c
            d = 1 / d
            step = d * c
            h *= step
            if abs(step - 1) < _EPSILON:
                return front * h
        raise ArithmeticError("incomplete gamma fraction did not converge")


def t_two_sided_p(t: Decimal, df: Decimal) -> Decimal:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    with localcontext(_context()):
        return regularized_beta(df / 2, Decimal("0.5"), df / (df + t * t))


def t_quantile(probability: Decimal, df: Decimal) -> Decimal:
    """The t with P(T <= t) = probability, for 0.5 <= probability < 1 (Newton inside a bracket)."""
    if not Decimal("0.5") <= probability < 1:
        raise ValueError("probability must be in [0.5, 1)")
    if probability == Decimal("0.5"):
        return Decimal(0)
    with localcontext(_context()):
        alpha = 2 * (1 - probability)  # the two-sided tail the quantile leaves
        low, high = Decimal(0), Decimal(1)
        while t_two_sided_p(high, df) > alpha:
            low, high = high, high * 2
        log_norm = log_gamma((df + 1) / 2) - log_gamma(df / 2) - (df * _PI).ln() / 2
        t = (low + high) / 2
        for _ in range(200):
            tail = t_two_sided_p(t, df)
            if tail > alpha:
                low = t
            else:
                high = t
            density = (log_norm - (df + 1) / 2 * (1 + t * t / df).ln()).exp()
            newton = t + (tail - alpha) / (2 * density)  # d(tail)/dt = -2 x density
            t_next = newton if low < newton < high else (low + high) / 2
            if abs(t_next - t) < Decimal("1e-30"):
                return t_next
            t = t_next
        return t


# --- Welch's t-test ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Sufficient statistics of integer observations: count, sum, sum of squares."""

    n: int
    total: int
    squares: int

    @classmethod
    def of(cls, values: Iterable[int]) -> Sample:
        n = total = squares = 0
        for value in values:
            n += 1
            total += value
            squares += value * value
        return cls(n, total, squares)

    @property
    def mean(self) -> Fraction:
        return Fraction(self.total, self.n) if self.n else Fraction(0)

    @property
    def variance(self) -> Fraction:
        """The unbiased sample variance (n - 1 in the denominator); 0 below two observations."""
        if self.n < 2:
            return Fraction(0)
        return (self.squares - Fraction(self.total * self.total, self.n)) / (self.n - 1)

    @property
    def standard_error(self) -> Decimal:
        if self.n == 0:
            return Decimal(0)
        with localcontext(_context()):
            return dec(self.variance / self.n).sqrt()


@dataclass(frozen=True)
class Comparison:
    difference: Fraction  # treatment mean - control mean
    ci_lower: Decimal
    ci_upper: Decimal
    p_value: Decimal
    t: Decimal
    df: Decimal
    significant: bool  # the interval excludes zero (and there was something to test)


def welch(treatment: Sample, control: Sample, confidence: Fraction = Fraction(95, 100)) -> Comparison:
    """Welch's unequal-variance t-test of treatment against control, two-sided.

    With fewer than two observations in a group there is no variance to test: the difference is
    reported with p = 1 and an interval that is the difference itself, never significant. With no
    variance in either group, a difference is certain (p = 0) and no difference is p = 1."""
    difference = treatment.mean - control.mean
    exact = dec(difference)
    if treatment.n < 2 or control.n < 2:
        return Comparison(difference, exact, exact, Decimal(1), Decimal(0), Decimal(0), False)
    var_t, var_c = treatment.variance / treatment.n, control.variance / control.n
    se_squared = var_t + var_c
    if se_squared == 0:
        return Comparison(
            difference, exact, exact, Decimal(0 if difference else 1), Decimal(0), Decimal(0), difference != 0
        )
    with localcontext(_context()):
        se = dec(se_squared).sqrt()
        df = dec(se_squared * se_squared / (var_t * var_t / (treatment.n - 1) + var_c * var_c / (control.n - 1)))
        t = exact / se
        p = t_two_sided_p(t, df)
        critical = t_quantile(dec((1 + confidence) / 2), df)
        low, high = exact - critical * se, exact + critical * se
        return Comparison(difference, low, high, p, t, df, low > 0 or high < 0)


# --- sample-ratio mismatch ----------------------------------------------------------------------


@dataclass(frozen=True)
class SrmResult:
    observed: tuple[int, ...]
    expected: tuple[Fraction, ...]
    chi_square: Fraction
    degrees_of_freedom: int
    p_value: Decimal
    threshold: Fraction

    @property
    def passed(self) -> bool:
        return self.p_value >= dec(self.threshold)


DEFAULT_SRM_THRESHOLD = Fraction(1, 1000)


def sample_ratio_check(
    observed: Sequence[int], weights: Sequence[int], threshold: Fraction = DEFAULT_SRM_THRESHOLD
) -> SrmResult:
    """Pearson's chi-square goodness of fit of the realised counts against the weights."""
    if len(observed) != len(weights) or len(weights) < 2:
        raise ValueError("need at least two groups, one weight each")
    if any(w <= 0 for w in weights) or any(o < 0 for o in observed):
        raise ValueError("weights must be positive and counts non-negative")
    total, weight_sum = sum(observed), sum(weights)
    expected = tuple(Fraction(total * w, weight_sum) for w in weights)
    if total == 0:
        chi = Fraction(0)
    else:
        chi = sum(((o - e) * (o - e) / e for o, e in zip(observed, expected, strict=True)), Fraction(0))
    dof = len(weights) - 1
    with localcontext(_context()):
        p = regularized_gamma_upper(Decimal(dof) / 2, dec(chi) / 2)
    return SrmResult(tuple(observed), expected, chi, dof, p, threshold)
