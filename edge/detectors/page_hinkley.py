"""The two-sided Page-Hinkley test (Page 1954, Hinkley 1971) the calibration drift detector runs on each day.

>>> ph = PageHinkley(delta=0.5, threshold=4.0)
>>> [ph.update(z) for z in [0.2, -0.3, 0.1, 1.5, 1.8, 2.0, 1.9]]
[False, False, False, False, False, False, True]
>>> round(ph.statistic, 2), ph.direction, ph.state()["n"]
(5.2, 'up', 7)
"""

from __future__ import annotations

from edge.detectors import state_json as sj


class PageHinkley:
    """Two-sided Page-Hinkley test on a standardised stream (calibration mean as the reference).

    ``update(z)`` adds one value (in units of the calibration spread) and says whether
    the cumulative excess beyond ``delta`` in either direction has passed ``threshold``.
    """

    def __init__(self, delta: float = 0.5, threshold: float = 6.0):
        if not (delta >= 0 and threshold > 0):
            raise ValueError(f"Page-Hinkley needs delta >= 0 and threshold > 0, got {delta}, {threshold}")
        self.delta = delta
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self.up_ = 0.0
        self.down_ = 0.0
        self.n_ = 0

    def update(self, z: float) -> bool:
        self.n_ += 1
        self.up_ = max(0.0, self.up_ + z - self.delta)
        self.down_ = max(0.0, self.down_ - z - self.delta)
        return self.statistic > self.threshold

    @property
    def statistic(self) -> float:
        return max(self.up_, self.down_)

    @property
    def direction(self) -> str:
        return "up" if self.up_ >= self.down_ else "down"

    def state(self) -> dict:
        """The two cumulative sums and the count: what the test has seen."""
        return {"up": self.up_, "down": self.down_, "n": self.n_}

    def restore(self, state: dict) -> None:
        """Take back ``state()``; ValueError (nothing changed) if it is malformed."""
        up = sj.real(sj.field(state, "up", "Page-Hinkley test"), "Page-Hinkley up")
        down = sj.real(sj.field(state, "down", "Page-Hinkley test"), "Page-Hinkley down")
        n = sj.integer(sj.field(state, "n", "Page-Hinkley test"), "Page-Hinkley n")
        if not (up >= 0 and down >= 0 and n >= 0):
            raise ValueError(f"Page-Hinkley sums must be >= 0, got up {up}, down {down}, n {n}")
        self.up_, self.down_, self.n_ = up, down, n


__all__ = ["PageHinkley"]
