"""Fitting a `train` command into a time limit (RunConfig.time_limit, `--time-limit SECONDS`).

What a run costs is measured, not guessed: each member's training step at its batch size
(augmentation, mixing and EMA included), its inference per image and the saving of its
per-epoch state are timed over a few steps on this machine, under its present load. `plan_run`
then gives every member as much training as fits, counted in steps and in proportion to its
preset's epochs, once what has already gone (process start, imports, decoding, the measuring
itself), each epoch's training and validation, each fold's TTA scoring and the end of the run
(ensemble weights, plots) are counted, less a margin. A member gets whole epochs of equal length
(`epoch_steps` shortens them when the time ends between two full passes), and its schedule is
built for those steps, so it still anneals to its end. Only when one epoch of every member on
every fold is too long are folds, then members, left out; when one epoch of one member is too
long, the limit is refused.

A measure of a few steps is off by 10-25% on a shared or throttled machine, and the load can
change during the run, so the plan is also corrected as it goes: each fit gets a deadline
(Deadlines), and after every epoch it resizes its remaining epochs to meet it, walking its
schedule at the matching rate (pace.Pace).
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .batches import as_source
from .config import Member, RunConfig
from .errors import PipelineError
from .inference import EVAL_BATCH, batch_rows, model_rows, predict_logits
from .losses import criterion as make_criterion
from .runtime import Session, process_seconds
from .train import LabelledImages, build_step, epoch_steps, make_ema, selects_best

MARGIN = 0.03          # share of the limit left unplanned: load changes, process exit
END_S = 6.0            # seconds after the last fold: ensemble weights, summary, the four plots,
                       # interpreter exit (2-core CPU under load: plots 3.6-4.3 s, exit 1.6-2.4 s)
WARMUP_CALLS = 2       # probe calls not timed (kernel selection, allocator)
PROBE_CALLS = 3        # timed calls at least ...
PROBE_MIN_S = 1.0      # ... and at least this long, so a fast call is averaged over many
PROBE_MAX_CALLS = 200  # ... and at most this many
@dataclass
class MemberCost:
    """What one member costs on this machine, measured."""
    step_s: float          # one training step at the member's batch size
    image_s: float         # inference of one image (one view)
    epoch_s: float = 0.0   # fixed per epoch: saving the resume state


@dataclass
class Plan:
    """How a run fits its limit; recorded in the run's config.json as `time_plan`."""
    limit_s: float
    elapsed_s: float                 # gone before training: start-up, decoding, measuring
    end_s: float                     # after the last fold
    margin_s: float
    members: int                     # the preset's first `members` members are trained ...
    folds: int                       # ... on the split's first `folds` folds
    epochs: list[int]                # per trained member
    preset_epochs: list[int]
    train_images_per_s: list[float]  # measured, per member
    eval_images_per_s: list[float]
    epoch_s: list[float]             # one planned epoch of each member on the first fold, validation included
    estimate_s: float                # expected wall time of the whole command
    epoch_steps: list[int] = field(default_factory=list)         # planned steps per epoch, per member
    preset_epoch_steps: list[int] = field(default_factory=list)  # a full epoch's steps (first fold)
    fit_s: list[list[float]] = field(default_factory=list)       # per member, each planned fit (a
                                                                 # refit on all images is the last)


class Deadlines:
    """When each fit of a planned run (a Plan as a dict) should end, as a time.monotonic()
    value: the time left until the training's planned end, shared among the fits not yet
    trained in proportion to their planned seconds. A fit that runs long or short moves the
    deadlines of those after it, and each fit resizes its own epochs to meet its deadline
    (pace.Pace), so the run ends on time on a machine whose speed differs from the measure."""

    def __init__(self, plan: dict):
        self.end_s = plan["limit_s"] - plan["end_s"] - plan["margin_s"]
        self.left = {(m, f): seconds for m, fits in enumerate(plan["fit_s"]) for f, seconds in enumerate(fits)}

    def of(self, m: int, f: int) -> float:
        """The deadline of member m's fit f (f: its index among the plan's folds; the refit is
        the last), now that it starts."""
        planned = self.left.pop((m, f), 0.0)
        remaining = planned + sum(self.left.values())
        share = planned / remaining if remaining > 0 else 1.0
        return time.monotonic() + max(0.0, self.end_s - process_seconds()) * share


def epoch_seconds(member: Member, cost: MemberCost, n_train: int, n_val: int) -> float:
    """One epoch: its training steps (member.epoch_steps caps them), the validation of its
    weights (the identity view for the log; the TTA views too where every epoch may be selected,
    train.validation_views), the saving of its state."""
    views = 1 + (len(member.tta) if member.tta != ["identity"] and selects_best(member) else 0)
    return epoch_steps(member, n_train) * cost.step_s + n_val * views * cost.image_s + cost.epoch_s


def fold_seconds(member: Member, cost: MemberCost, epochs: int, n_train: int, n_val: int) -> float:
    """One member on one fold: its epochs, and (a fixed schedule) the scoring of its last
    weights' TTA views on the validation images."""
    views = len(member.tta) if member.tta != ["identity"] and not selects_best(member) else 0
    return epochs * epoch_seconds(member, cost, n_train, n_val) + n_val * views * cost.image_s


def run_seconds(members: list[Member], costs: list[MemberCost], epochs: list[int],
                sizes: list[tuple[int, int]]) -> float:
    """Every member on every fold; `sizes` holds each fold's (training, validation) image counts."""
    return sum(fold_seconds(member, cost, count, n_train, n_val)
               for member, cost, count in zip(members, costs, epochs) for n_train, n_val in sizes)


def shortened(member: Member, scale: float, n_train: int) -> Member:
    """`member` trained for `scale` times its epochs, counted in steps: whole epochs of equal
    length (at most a full pass, at least one full epoch in all), so that the schedule, built
    for epochs x epoch_steps steps, still anneals to its end."""
    full = epoch_steps(member, n_train)
    total = max(full, int(scale * max(1, member.epochs) * full))
    epochs = -(-total // full)
    return replace(member, epochs=epochs, epoch_steps=total // epochs)


def size_members(members: list[Member], costs: list[MemberCost], sizes: list[tuple[int, int]],
                 available: float) -> list[Member] | None:
    """The members with the most training, in proportion to their own epochs and counted in
    steps, that fits `available` seconds; None when one epoch each does not fit."""
    n_train = min(n for n, _ in sizes)  # steps per epoch are set by the smallest fold

    def at(scale: float) -> list[Member]:
        return [shortened(member, scale, n_train) for member in members]

    def fits(scale: float) -> bool:
        sized = at(scale)
        return run_seconds(sized, costs, [member.epochs for member in sized], sizes) <= available

    if not fits(0):
        return None
    low, high = 0.0, 1.0
    while fits(high) and high < 2 ** 20:
        low, high = high, high * 2
    for _ in range(50):  # bisect the scale between what fits and what does not, to a step
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return at(low)


def plan_run(limit_s: float, elapsed_s: float, members: list[Member], costs: list[MemberCost],
             sizes: list[tuple[int, int]], end_s: float | None = None) -> Plan:
    """Size the run to end within `limit_s` seconds of the process start, `elapsed_s` of which
    have gone. Folds are left out before members, from the last."""
    end_s = END_S if end_s is None else end_s
    margin_s = MARGIN * limit_s
    available = limit_s - elapsed_s - end_s - margin_s
    shapes = [(len(members), folds) for folds in range(len(sizes), 0, -1)] + \
             [(count, 1) for count in range(len(members) - 1, 0, -1)]
    for kept, folds in shapes:
        sized = size_members(members[:kept], costs[:kept], sizes[:folds], available)
        if sized is not None:
            pairs = list(zip(members[:kept], costs))
            epochs = [member.epochs for member in sized]
            spent = run_seconds(sized, costs, epochs, sizes[:folds])
            return Plan(limit_s, elapsed_s, end_s, margin_s, kept, folds, epochs,
                        preset_epochs=[member.epochs for member, _ in pairs],
                        train_images_per_s=[member.batch_size / cost.step_s for member, cost in pairs],
                        eval_images_per_s=[1 / cost.image_s for _, cost in pairs],
                        epoch_s=[epoch_seconds(member, cost, *sizes[0]) for member, cost in zip(sized, costs)],
                        estimate_s=elapsed_s + spent + end_s,
                        epoch_steps=[member.epoch_steps for member in sized],
                        preset_epoch_steps=[epoch_steps(member, sizes[0][0]) for member, _ in pairs],
                        fit_s=[[fold_seconds(member, cost, member.epochs, n_train, n_val)
                                for n_train, n_val in sizes[:folds]] for member, cost in zip(sized, costs)])
    shortest = elapsed_s + fold_seconds(members[0], costs[0], 1, *sizes[0]) + end_s + margin_s
    raise PipelineError(
        f"--time-limit {limit_s:.0f} is too short on this machine: {elapsed_s:.0f} s went to start-up, "
        f"decoding and measuring, and one epoch of the first member ({members[0].model}) on one fold "
        f"brings the run to about {shortest:.0f} s. Give at least {shortest * 1.2:.0f} s, pick a "
        f"smaller preset, or train on fewer images (--set subset=N).")


def _seconds_per_call(call, device: torch.device) -> float:
    """Mean seconds of `call()` after WARMUP_CALLS untimed ones."""
    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    for _ in range(WARMUP_CALLS):
        call()
    started, calls = clock(), 0
    while calls < PROBE_CALLS or (clock() - started < PROBE_MIN_S and calls < PROBE_MAX_CALLS):
        call()
        calls += 1
    return (clock() - started) / calls


def measure_member(model, member: Member, session: Session, data: LabelledImages) -> MemberCost:
    """Time `member`'s training step (train.build_step, as training runs it, its batch read and
    EMA update included), inference and per-epoch save on a throwaway `model` (trained by the
    probe: do not reuse it). `data.images`: a batch source (batches.py), or uint8 (N, C, H, W)
    on the session's device."""
    device, labels = session.runtime.device, data.labels
    source = as_source(data.images)
    criterion = make_criterion(data.target, member, labels.cpu().numpy(), device)
    train, ema = build_step(model, member, session, criterion, seed=0), make_ema(model, member)
    metadata = model_rows(model, source, device)

    def step():
        index = torch.randint(len(labels), (member.batch_size,), device=device, generator=train.generator)
        batch = next(source.batches([index]))
        model.train()
        train(model, batch, labels[index], *batch_rows(metadata, index))
        if ema is not None:
            ema.update_parameters(model)

    def save():
        state = {"model": model.state_dict(), "optimizer": train.optimizer.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None}
        torch.save(state, io.BytesIO())

    sample = torch.arange(min(len(source), EVAL_BATCH))
    return MemberCost(step_s=_seconds_per_call(step, device),
                      image_s=_seconds_per_call(lambda: predict_logits(model, source, session.runtime,
                                                                       positions=sample),
                                                device) / len(sample),
                      epoch_s=_seconds_per_call(save, device))


def plan_time_limit(session: Session, data: LabelledImages, splits: list,
                    new_model: Callable[[Member], torch.nn.Module]) -> Plan:
    """Measure every member (`new_model(member)` gives a fresh network) and plan the run."""
    run = session.run
    costs = [measure_member(new_model(member), member, session, data) for member in run.members]
    sizes = [(len(train_idx), len(val_idx)) for train_idx, val_idx in splits]
    if run.refit:  # one more fit, on every image, after the folds (the first left out to fit)
        sizes.append((len(data.labels), 0))
    return plan_run(run.time_limit, process_seconds(), run.members, costs, sizes)


def apply_plan(plan: Plan, run: RunConfig) -> None:
    """Keep the run's members the plan keeps, with the plan's epochs and steps per epoch
    (folds: `plan.folds`)."""
    run.members = run.members[:plan.members]
    for member, epochs, steps in zip(run.members, plan.epochs, plan.epoch_steps):
        member.epochs, member.epoch_steps = epochs, steps


def describe(plan: Plan, members: list[Member], folds: int) -> str:
    """The plan as printed before training."""
    lines = [f"Time limit {plan.limit_s:.0f} s: {plan.elapsed_s:.1f} s gone (start-up, decoding, measuring); "
             f"planned to end at about {plan.estimate_s:.0f} s ({plan.margin_s:.0f} s margin, "
             f"{plan.end_s:.0f} s for the ensemble and plots)."]
    for m, member in enumerate(members[:plan.members]):
        lines.append(f"  m{m} {member.model}: {plan.epochs[m]} epochs of {plan.epoch_steps[m]:,} steps "
                     f"(preset {plan.preset_epochs[m]} of {plan.preset_epoch_steps[m]:,}) "
                     f"x {plan.folds} fold(s), about {plan.epoch_s[m]:.1f} s an epoch; measured "
                     f"{plan.train_images_per_s[m]:,.0f} training and {plan.eval_images_per_s[m]:,.0f} "
                     f"inference images/s")
    if plan.folds < folds:
        lines.append(f"  left out to fit: folds {plan.folds + 1}-{folds} of {folds}")
    if plan.members < len(members):
        lines.append(f"  left out to fit: members m{plan.members}-m{len(members) - 1}")
    return "\n".join(lines)
