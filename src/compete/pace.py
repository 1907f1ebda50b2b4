"""A fit's deadline (train --time-limit): after every epoch its remaining epochs are resized to
the time left, and its learning-rate schedule is walked at the rate that still ends it on its
last step. budget.py plans the run and gives each fit its deadline (budget.Deadlines)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import distributed

PACE_PASSES = 2  # a paced epoch takes at most this many passes over the images


@dataclass
class Pace:
    """How a fit with a deadline walks its learning-rate schedule: when the machine turns out
    faster or slower than planned, its remaining epochs take more or fewer steps (at most
    PACE_PASSES passes over the images), and the schedule is walked at the rate that still
    brings it to its last step at the end of the last epoch."""
    total: int                       # the schedule's steps (built for the planned epochs x steps)
    steps: int                       # training steps of each remaining epoch
    position: float = 0.0            # schedule steps walked
    rate: float = 1.0                # schedule steps per training step

    def advance(self, scheduler) -> None:
        """One training step: the schedule moves on by `rate` of its steps (never past its end)."""
        self.position = min(self.position + self.rate, self.total)
        if self.rate != 1.0:
            scheduler.last_epoch = self.position - 1  # step() adds the one
        scheduler.step()

    def replan(self, epochs_left: int, step_s: float, epoch_s: float, last_extra_s: float,
               seconds_left: float, most: int) -> None:
        """Steps per remaining epoch that end the fit `seconds_left` from now, given what a step,
        the rest of an epoch (validation, saving) and the last epoch's extra scoring took."""
        if epochs_left <= 0:
            return
        training_s = seconds_left - epochs_left * epoch_s - last_extra_s
        self.steps = max(1, min(most, int(training_s / max(step_s, 1e-9) / epochs_left)))
        self.rate = (self.total - self.position) / (self.steps * epochs_left)


@dataclass
class EpochTimes:
    """What the epoch just completed took, in seconds: a training step, the rest of the epoch
    (validation, saving), and what the last epoch adds (scoring the member's TTA views)."""
    step_s: float
    rest_s: float
    last_extra_s: float


def meet_deadline(pace: Pace, epochs_left: int, times: EpochTimes, deadline: float, most: int) -> None:
    """Resize the remaining epochs (at most `most` steps each) to end by `deadline`
    (time.monotonic()). Every process plans from the main one's clock, so all take the same steps."""
    step_s, rest_s, extra, seconds = distributed.share(
        (times.step_s, times.rest_s, times.last_extra_s, deadline - time.monotonic()))
    pace.replan(epochs_left, step_s, rest_s, extra, seconds, most)
