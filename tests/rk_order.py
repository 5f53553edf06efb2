"""An independent measurement of a Runge-Kutta tableau's order, shared by the tableau and
named-method tests (imported as ``rk_order``: tests/ is on sys.path).

Its own explicit RK loop integrates ODEs with known exact solutions and reads off the
empirical convergence order of the global error (halving the step size); ``EXTRA`` holds
tableaus outside the registry whose orders are known.
"""

from __future__ import annotations

import math

from rkmeta_rl.tableau import Tableau

# ----------------------------------------------------------------------------------------
# Independent empirical order measurement
# ----------------------------------------------------------------------------------------


def _rk_step(f, t, y, h, a, q):
    """One explicit RK step y_{n+1} = y_n + h sum a_i k_i, k_i = f(t + c_i h, Y_i)."""
    s = len(a)
    ks = []
    for i in range(s):
        ci = sum(q[i][:i])
        yi = [y[m] + h * sum(q[i][j] * ks[j][m] for j in range(i)) for m in range(len(y))]
        ks.append(f(t + ci * h, yi))
    return [y[m] + h * sum(a[i] * ks[i][m] for i in range(s)) for m in range(len(y))]


def _global_error(problem, a, q, n_steps):
    f, y0, t_end, exact = problem
    h = t_end / n_steps
    y, t = list(y0), 0.0
    for _ in range(n_steps):
        y = _rk_step(f, t, y, h, a, q)
        t += h
    return max(abs(u - v) for u, v in zip(y, exact(t_end), strict=True))


# y' = 1 + y^2, y(0) = 0  ->  y = tan(t)          (scalar, autonomous, nonlinear)
# (kept to t <= 0.5, well away from the pole at pi/2, so the error is in its asymptotic regime)
_TAN = (lambda t, y: [1.0 + y[0] ** 2], [0.0], 0.5, lambda t: [math.tan(t)])

# y' = -2 t y^2, y(0) = 1  ->  y = 1 / (1 + t^2)  (non-autonomous: exercises the nodes c)
_NONAUT = (
    lambda t, y: [-2.0 * t * y[0] ** 2],
    [1.0],
    2.0,
    lambda t: [1.0 / (1.0 + t * t)],
)


def _kepler(t, y):
    x1, x2, v1, v2 = y
    r3 = (x1 * x1 + x2 * x2) ** 1.5
    return [v1, v2, -x1 / r3, -x2 / r3]


# circular Kepler orbit (4-d nonlinear system)
_KEPLER = (
    _kepler,
    [1.0, 0.0, 0.0, 1.0],
    2.0,
    lambda t: [math.cos(t), math.sin(t), -math.sin(t), math.cos(t)],
)

# y' = y: linear; sees only the "tall tree" conditions, so it cannot tell all orders apart
_LINEAR = (lambda t, y: [y[0]], [1.0], 1.0, lambda t: [math.exp(t)])

NONLINEAR_PROBLEMS = {"tan": _TAN, "nonautonomous": _NONAUT, "kepler": _KEPLER}


def _empirical_order(problem, a, q, n=40):
    e1 = _global_error(problem, a, q, n)
    e2 = _global_error(problem, a, q, 2 * n)
    return math.log2(e1 / e2)


# Extra (non-registry) tableaus with known orders, to test order() beyond the named ones.
EXTRA = {
    # Heun's third-order method
    "heun3": (
        Tableau.from_rows("heun3", [1 / 4, 0, 3 / 4], [[0, 0, 0], [1 / 3, 0, 0], [0, 2 / 3, 0]]),
        3,
    ),
    # Kutta's 3/8 rule
    "rk38": (
        Tableau.from_rows(
            "rk38",
            [1 / 8, 3 / 8, 3 / 8, 1 / 8],
            [[0, 0, 0, 0], [1 / 3, 0, 0, 0], [-1 / 3, 1, 0, 0], [1, -1, 1, 0]],
        ),
        4,
    ),
    # satisfies the linear ("tall tree") third-order condition sum a q c = 1/6 but not
    # sum a c^2 = 1/3, so it is only second order (but looks third order on y' = y)
    "fake3": (
        Tableau.from_rows("fake3", [1 / 3, 1 / 3, 1 / 3], [[0, 0, 0], [1 / 2, 0, 0], [0, 1, 0]]),
        2,
    ),
}
