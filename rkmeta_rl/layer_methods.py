"""A tableau per parameter group: ``--layer-methods "head=midpoint,*=ralston"``.

The paper's "Extension to ANIL" proposes a different RK method per layer. Here a rule
list ``PATTERN=METHOD,...`` gives each parameter its tableau (docs/method.md, "A tableau per
parameter group"):

* a PATTERN matches a parameter name (``fnmatch`` syntax: ``*``, ``?``, ``[wb]``), or a
  module path: ``head`` matches ``head.weight`` and ``head.bias``;
* ``*`` alone is the fallback for every parameter no other pattern matches;
* every parameter must be matched exactly once, and every pattern must match something;
* METHOD is any name ``rkmeta-rl methods`` lists, or ``frozen:METHOD``: that method's
  weights a with q = 0, so the group is not moved by the inner step (ANIL's body is
  ``frozen:midpoint`` beside a ``midpoint`` head).

Each group gets its own step h from the run's reading (α given: h = α / c2 of its own
tableau; h given: that h); a frozen group has none (it never moves). A parameter's
test-time adaptation step is then c2·h of its own tableau (0 for a frozen group).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from rkmeta_rl.methods import get_tableau
from rkmeta_rl.rk import Scheme
from rkmeta_rl.run.config import CLI_NAMES, SettingNames, StoredConfig, resolve_steps
from rkmeta_rl.tableau import Tableau

FROZEN = "frozen:"
Rules = tuple[tuple[str, Tableau], ...]


def method_tableau(name: str) -> Tableau:
    """A named method, or ``frozen:METHOD`` (its weights, no inner movement)."""
    if name.startswith(FROZEN):
        base = get_tableau(name[len(FROZEN):])
        zeros = tuple((0.0,) * base.stages for _ in range(base.stages))
        return Tableau(name=FROZEN + base.name, a=base.a, q=zeros)
    return get_tableau(name)


def parse_layer_methods(text: str, names: SettingNames = CLI_NAMES) -> Rules:
    """``"head=midpoint,*=ralston"`` -> ((pattern, tableau), ...), in the order given
    (errors name the setting by ``names``)."""
    flag = names.layer_methods
    rules: list[tuple[str, Tableau]] = []
    for part in (p.strip() for p in text.split(",")):
        pattern, sep, method = (x.strip() for x in part.partition("="))
        if not (sep and pattern and method):
            raise ValueError(f"{flag}: expected PATTERN=METHOD[,PATTERN=METHOD...] "
                             f"like 'head=midpoint,*=ralston', got {part!r}")
        if pattern in (p for p, _ in rules):
            raise ValueError(f"{flag}: pattern {pattern!r} is given twice")
        rules.append((pattern, method_tableau(method)))
    return tuple(rules)


def _matches(pattern: str, name: str) -> bool:
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def assign(rules: Rules, names: Iterable[str], setting: SettingNames = CLI_NAMES
           ) -> dict[str, Tableau]:
    """Each parameter's tableau; ValueError unless every parameter is matched exactly once
    and every pattern matches one."""
    names, flag = list(names), setting.layer_methods
    explicit = [(p, t) for p, t in rules if p != "*"]
    fallback = dict(rules).get("*")
    out: dict[str, Tableau] = {}
    for name in names:
        hits = [(p, t) for p, t in explicit if _matches(p, name)]
        if len(hits) > 1:
            raise ValueError(f"{flag}: parameter {name!r} is matched by "
                             f"{' and '.join(repr(p) for p, _ in hits)}; give each parameter "
                             "one pattern")
        if hits:
            out[name] = hits[0][1]
        elif fallback is not None:
            out[name] = fallback
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(f"{flag}: no pattern matches {', '.join(missing)}; add one "
                         f"or a '*=METHOD' fallback (parameters: {', '.join(names)})")
    unused = [p for p, _ in explicit if not any(_matches(p, n) for n in names)]
    if unused:
        raise ValueError(f"{flag}: pattern(s) {', '.join(map(repr, unused))} match no "
                         f"parameter (parameters: {', '.join(names)})")
    return out


def group_step(tableau: Tableau, inner_lr: float | None, step_size: float | None,
               default_inner_lr: float, names: SettingNames = CLI_NAMES) -> float:
    """A group's h under the run's reading; 0 for a group that never moves: a
    ``frozen:METHOD`` group, or a tableau of several stages none of which moves (it has no
    c2). One stage (Euler) moves at test time by α = h, so it gets its h like any method."""
    if tableau.name.startswith(FROZEN) or (
            tableau.stages > 1 and all(v == 0.0 for row in tableau.q for v in row)):
        return 0.0
    return resolve_steps(tableau, inner_lr, step_size, default_inner_lr, names)[1]


def build_scheme(rules: Rules, names: Iterable[str], inner_lr: float | None,
                 step_size: float | None, default_inner_lr: float,
                 setting: SettingNames = CLI_NAMES) -> Scheme:
    """The per-parameter scheme of ``rules`` for parameters ``names`` (errors name the
    settings by ``setting``)."""
    tableaus = assign(rules, names, setting)
    steps = {n: group_step(t, inner_lr, step_size, default_inner_lr, setting)
             for n, t in tableaus.items()}
    return Scheme(tableaus, steps)


def adaptation_steps(scheme: Scheme) -> dict[str, float]:
    """Each parameter's test-time step α_n = c2·h of its own tableau (h for one stage)."""
    return {n: (t.c[1] if t.stages > 1 else 1.0) * scheme.steps[n]
            for n, t in scheme.tableaus.items()}


def describe(scheme: Scheme) -> dict[str, dict]:
    """{parameter: {"method", "h", "alpha"}} for config.json and logs."""
    alphas = adaptation_steps(scheme)
    return {n: {"method": t.name, "h": scheme.steps[n], "alpha": alphas[n]}
            for n, t in scheme.tableaus.items()}


def method_of(cfg: StoredConfig, names: Iterable[str]
              ) -> tuple[Tableau | Scheme, float | None, float | dict[str, float]]:
    """A resolved run config's RK method over parameters ``names``: its tableau, its h and
    its test-time α; or, with ``layer_methods``, its scheme, None and each parameter's α
    (ValueError if the rules do not fit the names)."""
    if cfg.layer_methods is None:
        return cfg.get_tableau(), cfg.h, cfg.alpha
    scheme = build_scheme(parse_layer_methods(cfg.layer_methods), names, cfg.inner_lr,
                          cfg.step_size, cfg.alpha)
    return scheme, None, adaptation_steps(scheme)
