"""predict --time-limit: a submission that always arrives. Each model's rate is measured on the
first test images; where every view of every model would not end within the limit, the costliest
members' extra TTA views go first, then whole members, and what was dropped is said."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


from .batches import as_source
from .inference import eval_batch_size, view_logits
from .runtime import Runtime, process_seconds

MEASURED_MAX = 256     # test images timed per model at most: one inference batch (a quarter of the
                       # test set at most), after an untimed batch of the same size: small batches
                       # and a first call cost far more per image than predict's batches do
RESERVE = 0.1          # share of the time left kept for what is not inference (blending, writing)


@dataclass
class Plan:
    """What predicts: each member's kept views, the members kept, and what was dropped."""
    views: dict[int, list[str]]
    members: list[int]
    seconds: float                                 # the estimate for what is kept
    limit_s: float                                 # the seconds it was planned for
    dropped: list[str] = field(default_factory=list)

    def says(self) -> str:
        kept = ", ".join(f"m{m} {'+'.join(self.views[m])}" for m in self.members)
        if not self.dropped:
            return f"every view of every model fits (estimated {self.seconds:.0f} s of {self.limit_s:.0f} s left)"
        late = (f"; even that is estimated beyond the {self.limit_s:.0f} s left: the submission will be late"
                if self.seconds > self.limit_s else f" of {self.limit_s:.0f} s left")
        return f"dropped {', '.join(self.dropped)}; kept {kept} (estimated {self.seconds:.0f} s{late})"


def seconds_per_view(models: list[tuple[int, object]], images, runtime: Runtime) -> dict[int, float]:
    """Per member, the seconds one view of all its models takes over every test image, from
    each model timed on the first images, in one batch of the size predict uses."""
    count = len(images)
    measured = max(1, min(count // 4, eval_batch_size(as_source(images).shape), MEASURED_MAX))
    positions = list(range(measured))
    seconds = {}
    for m, model in models:
        view_logits(model, images, runtime, [None], positions)  # warm-up: first-call costs
        started = time.perf_counter()
        view_logits(model, images, runtime, [None], positions)
        per_image = (time.perf_counter() - started) / len(positions)
        seconds[m] = seconds.get(m, 0.0) + per_image * count
    return seconds


def plan_within(limit_s: float, per_view: dict[int, float], views: dict[int, list[str]],
                weights: list[float]) -> Plan:
    """Drop the views (the last of a member's list first; its first view always stays) of the
    member whose view costs most, until the estimate fits `limit_s`; then whole members, the
    costliest first, down to one (the best-weighted)."""
    views = {m: list(names) for m, names in views.items()}
    members = sorted(per_view, key=lambda m: -weights[m])  # best-weighted first
    dropped = []

    def estimate() -> float:
        return sum(per_view[m] * len(views[m]) for m in members)
    while estimate() > limit_s:
        several = [m for m in members if len(views[m]) > 1]
        if several:
            m = max(several, key=lambda m: per_view[m])
            dropped.append(f"m{m} view {views[m].pop()}")
        elif len(members) > 1:
            m = max(members[1:], key=lambda m: per_view[m] * len(views[m]))
            members.remove(m)
            dropped.append(f"member m{m}")
        else:
            break  # one view of one model: nothing left to drop
    return Plan(views, sorted(members), estimate(), limit_s, dropped)


def checkpoints_kept(checkpoints: list[tuple[int, Path]], plan: Plan) -> list[tuple[int, Path]]:
    return [(m, path) for m, path in checkpoints if m in plan.members]


def summary_of_kept(summary: dict, plan: Plan) -> dict:
    """The run's summary with the dropped members' weights at zero: the blend renormalizes the rest."""
    weights = [w if m in plan.members else 0.0 for m, w in enumerate(summary["weights"])]
    return {**summary, "weights": weights}
