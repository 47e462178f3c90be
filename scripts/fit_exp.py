#!/usr/bin/env python3
"""Fit the polynomial that the fused engine's exp uses on [-ln2/2, ln2/2].

Least squares on relative error at 200 Chebyshev nodes, computed in 60-digit
decimal arithmetic, so that only the final rounding of each coefficient to
float64 matters. Prints the largest relative error of the float64 Horner
evaluation over 2001 points and the coefficients, lowest degree first.

    python3 scripts/fit_exp.py 11
"""

import math
import sys
from decimal import Decimal, getcontext

getcontext().prec = 60


def fit(degree, nodes=200):
    half = Decimal(2).ln() / 2
    xs = [half * Decimal(repr(math.cos(math.pi * (j + 0.5) / nodes))) for j in range(nodes)]
    fs = [x.exp() for x in xs]
    n = degree + 1
    # Rows divided by f(x) so that the residual is the relative error.
    rows = [[x**k / f for k in range(n)] for x, f in zip(xs, fs)]
    normal = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    rhs = [sum(r[i] for r in rows) for i in range(n)]

    # Gaussian elimination with partial pivoting.
    for i in range(n):
        pivot = max(range(i, n), key=lambda r: abs(normal[r][i]))
        normal[i], normal[pivot] = normal[pivot], normal[i]
        rhs[i], rhs[pivot] = rhs[pivot], rhs[i]
        for r in range(i + 1, n):
            factor = normal[r][i] / normal[i][i]
            for c in range(i, n):
                normal[r][c] -= factor * normal[i][c]
            rhs[r] -= factor * rhs[i]
    coefficients = [Decimal(0)] * n
    for i in reversed(range(n)):
        known = sum(normal[i][j] * coefficients[j] for j in range(i + 1, n))
        coefficients[i] = (rhs[i] - known) / normal[i][i]
    return half, [float(c) for c in coefficients]


def max_relative_error(half, coefficients, points=2001):
    worst = Decimal(0)
    for j in range(points):
        x = float(-half + 2 * half * j / (points - 1))
        value = coefficients[-1]
        for c in reversed(coefficients[:-1]):
            value = value * x + c
        exact = Decimal(repr(x)).exp()
        worst = max(worst, abs((Decimal(value) - exact) / exact))
    return float(worst)


def main():
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    half, coefficients = fit(degree)
    print(f"degree {degree}: max relative error of float64 Horner {max_relative_error(half, coefficients):.3e}")
    for c in coefficients:
        print(repr(c))


if __name__ == "__main__":
    main()
