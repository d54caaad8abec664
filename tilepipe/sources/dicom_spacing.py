"""How the slices of an ordered stack are spaced: runs of one step, missing slices, spacing changes.

Real stacks are not all regular, and the two ways they fail mean different things. A *missing
slice* (a file lost in transfer, a slice the scanner dropped) leaves one step that is a whole
multiple of the steps on both sides of it: 2.5, 2.5, 5.0, 2.5 mm. A *spacing change* is the
protocol's: a head CT that steps 4.22 mm through the skull base, once 1.14 mm, then 7.38 mm
through the vault has nothing missing, and calling every 7.38 mm step "about 1 slice missing"
(7.38 / 4.22 rounds to 2) buries the one fact a reader needs under a dozen false ones. So a step
is a gap only when it is close to a whole multiple (at least 2) of the spacing *around it*, and
everything else uneven is said once, as the runs of steps the stack is made of.

Pure functions of the slice locations along the normal (ascending), so every rule is
property-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RUN_TOLERANCE = 0.05
"""Consecutive steps within this fraction of their run's mean step are one spacing."""
MULTIPLE_TOLERANCE = 0.1
"""A step is a whole multiple ``m`` of the spacing around it when ``step / spacing`` is within this
of ``m`` (with ``m >= 2``): slices are then missing there."""
RUNS_LISTED = 4
"""At most this many runs are listed by name; a stack of more has no pattern worth spelling out."""


@dataclass(frozen=True)
class Run:
    """``count`` consecutive steps of about ``step`` mm, from ordered slice ``first`` (0-based)."""

    first: int
    count: int
    step: float

    @property
    def last(self) -> int:
        """The ordered slice the run ends on."""
        return self.first + self.count


@dataclass(frozen=True)
class Gap:
    """Slices missing between ordered slices ``after`` and ``after + 1``."""

    after: int
    step: float
    missing: int
    spacing: float
    """The step on either side of the gap, of which ``step`` is a whole multiple."""


@dataclass(frozen=True)
class Spacing:
    """The steps of an ordered stack, as runs of one spacing and the gaps among them."""

    runs: tuple[Run, ...]
    """Runs of one spacing, gaps left out (neighbouring runs of the same spacing stay apart)."""
    gaps: tuple[Gap, ...]
    locations: tuple[float, ...]

    @property
    def changes(self) -> bool:
        """Whether the spacing itself changes (not counting gaps) along the stack."""
        steps = [r.step for r in self.runs]
        return bool(steps) and max(steps) - min(steps) > RUN_TOLERANCE * min(steps)

    def describe(self) -> str | None:
        """One phrase for what is irregular (None for an evenly spaced stack): the gaps, and the
        spacing change slice by slice (numbered from 1 in stack order, with their locations along
        the normal) when there are few enough runs to list."""
        said = []
        if self.gaps:
            said.append(f"{len(self.gaps)} gap(s) where about {sum(g.missing for g in self.gaps)} slice(s) are missing")
        if self.changes:
            if len(self.runs) > RUNS_LISTED:
                steps = [r.step for r in self.runs]
                said.append(f"uneven slice spacing: {len(self.runs)} runs of steps from {min(steps):.4g} to "
                            f"{max(steps):.4g} mm")
            else:
                said.append("uneven slice spacing along the normal: " + ", then ".join(map(self._run, self.runs)))
        return "; ".join(said) or None

    def _run(self, run: Run) -> str:
        where = f"slices {run.first + 1}-{run.last + 1}, {self.locations[run.first]:.4g} to {self.locations[run.last]:.4g} mm"
        steps = f"one {run.step:.4g} mm step" if run.count == 1 else f"{run.count} steps of {run.step:.4g} mm"
        return f"{steps} ({where})"


def spacing_of(locations: Sequence[float]) -> Spacing:
    """The runs and gaps of a stack whose slices sit at ``locations`` (ascending, mm)."""
    steps = np.diff(np.asarray(locations, float))
    runs = _runs(steps)
    gaps, kept = [], []
    for k, run in enumerate(runs):
        around = _spacing_around(runs, k)
        multiple = round(run.step / around) if around else 0
        if multiple >= 2 and abs(run.step / around - multiple) <= MULTIPLE_TOLERANCE:
            gaps += [Gap(run.first + i, float(steps[run.first + i]), multiple - 1, around) for i in range(run.count)]
        else:
            kept.append(run)
    return Spacing(tuple(kept), tuple(gaps), tuple(float(v) for v in locations))


def _runs(steps: np.ndarray) -> list[Run]:
    """Consecutive steps grouped while each stays within ``RUN_TOLERANCE`` of its run's mean."""
    runs: list[Run] = []
    start = 0
    for k in range(1, len(steps) + 1):
        mean = float(steps[start:k].mean())
        if k == len(steps) or abs(steps[k] - mean) > RUN_TOLERANCE * mean:
            runs.append(Run(start, k - start, mean))
            start = k
    return runs


def _spacing_around(runs: list[Run], k: int) -> float | None:
    """The spacing on both sides of run ``k`` when they agree; a single step at either end of the
    stack has only one side. None when there is no one spacing around it."""
    before = runs[k - 1].step if k > 0 else None
    after = runs[k + 1].step if k + 1 < len(runs) else None
    if before is not None and after is not None:
        return (before + after) / 2 if abs(before - after) <= RUN_TOLERANCE * min(before, after) else None
    if runs[k].count == 1:
        return before if before is not None else after
    return None
