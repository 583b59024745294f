"""Learning-rate schedules for training landmark models.

:class:`SoftStartAnnealing` is TAO's ``soft_start_annealing_schedule`` (the
schedule of TAO's FPENet recipes) written as a Keras
``LearningRateSchedule``: it depends only on the optimizer step, so it resumes
exactly with ``keras.callbacks.BackupAndRestore`` (which restores the
optimizer's iteration counter) and runs unchanged under ``tf.distribute``.
Cosine decay with warm-up comes from Keras core
(``keras.optimizers.schedules.CosineDecay``); :func:`get_schedule` builds
either from a training config.
"""

import math

import keras
from keras import ops

SCHEDULE_NAMES = ("soft_start_annealing", "cosine", "constant")


@keras.saving.register_keras_serializable(package="fpezoo")
class SoftStartAnnealing(keras.optimizers.schedules.LearningRateSchedule):
    """TAO's soft-start annealing learning-rate schedule.

    With ``progress = step / total_steps`` (clipped to [0, 1]) and
    ``min_lr = min_lr_ratio * base_lr``, the rate is
    ``exp(log(min_lr) + t * (log(base_lr) - log(min_lr)))`` where

    * ``t = progress / soft_start`` while ``progress < soft_start`` (exponential
      ramp from ``min_lr`` up to ``base_lr``),
    * ``t = 1`` until ``annealing_start`` (plateau at ``base_lr``),
    * ``t = (1 - progress) / (1 - annealing_start)`` after it (exponential
      decay back to ``min_lr`` at the last step).

    This is the ``SoftStartAnnealingLearningRateScheduler`` of NVIDIA TAO
    Toolkit (used by its FPENet training spec), as a per-step schedule.

    Args:
        base_lr: the plateau (largest) learning rate.
        total_steps: number of optimizer steps of the whole run.
        min_lr_ratio: ``min_lr / base_lr``, in (0, 1].
        soft_start: progress in [0, 1) at which ``base_lr`` is reached.
        annealing_start: progress in (soft_start, 1] at which decay starts.
        name: optional name.
    """

    def __init__(self, base_lr, total_steps, min_lr_ratio=0.01, soft_start=0.1,
                 annealing_start=0.7, name="soft_start_annealing"):
        _check_positive("base_lr", base_lr)
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(
                f"`total_steps` must be a positive integer. Received: total_steps={total_steps!r}"
            )
        if not 0.0 < min_lr_ratio <= 1.0:
            raise ValueError(
                f"`min_lr_ratio` must be in (0, 1]. Received: min_lr_ratio={min_lr_ratio!r}"
            )
        if not 0.0 <= soft_start < annealing_start <= 1.0:
            raise ValueError(
                "Need 0 <= soft_start < annealing_start <= 1. "
                f"Received: soft_start={soft_start!r}, annealing_start={annealing_start!r}"
            )
        self.base_lr = float(base_lr)
        self.total_steps = total_steps
        self.min_lr_ratio = float(min_lr_ratio)
        self.soft_start = float(soft_start)
        self.annealing_start = float(annealing_start)
        self.name = name

    def __call__(self, step):
        progress = ops.clip(ops.cast(step, "float32") / float(self.total_steps), 0.0, 1.0)
        ramp = progress / self.soft_start if self.soft_start > 0 else ops.ones_like(progress)
        if self.annealing_start < 1.0:
            decay = (1.0 - progress) / (1.0 - self.annealing_start)
        else:
            decay = ops.ones_like(progress)
        t = ops.where(progress < self.soft_start, ramp, ops.ones_like(progress))
        t = ops.where(progress > self.annealing_start, decay, t)
        log_min = math.log(self.base_lr * self.min_lr_ratio)
        log_base = math.log(self.base_lr)
        return ops.exp(log_min + t * (log_base - log_min))

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "min_lr_ratio": self.min_lr_ratio,
            "soft_start": self.soft_start,
            "annealing_start": self.annealing_start,
            "name": self.name,
        }


def _check_positive(arg_name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{arg_name}` must be a positive number. Received: {arg_name}={value!r}")


def get_schedule(config, total_steps):
    """Builds a learning rate (schedule) from the ``schedule`` entry of a training config.

    Args:
        config: ``{"name": ..., <options>}`` with name

            * ``"soft_start_annealing"``: options ``base_lr`` (default 5e-4),
              ``min_lr_ratio``, ``soft_start``, ``annealing_start``
              (see :class:`SoftStartAnnealing`);
            * ``"cosine"``: ``base_lr`` (default 1e-3), ``warmup_fraction``
              (default 0.05, linear warm-up from 0), ``alpha`` (final rate
              fraction, default 0.01): ``keras.optimizers.schedules.CosineDecay``;
            * ``"constant"``: ``base_lr`` (default 1e-3).
        total_steps: optimizer steps of the whole run.

    Returns:
        A ``LearningRateSchedule``, or a float for ``"constant"``.
    """
    if not isinstance(config, dict) or config.get("name") not in SCHEDULE_NAMES:
        raise ValueError(
            f"`schedule` must be a dict whose 'name' is one of {SCHEDULE_NAMES}. "
            f"Received: schedule={config!r}"
        )
    options = {key: value for key, value in config.items() if key != "name"}
    name = config["name"]
    allowed = {
        "soft_start_annealing": {"base_lr", "min_lr_ratio", "soft_start", "annealing_start"},
        "cosine": {"base_lr", "warmup_fraction", "alpha"},
        "constant": {"base_lr"},
    }[name]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for the {name!r} schedule; allowed: {sorted(allowed)}. "
            f"Received: schedule={config!r}"
        )
    if name == "soft_start_annealing":
        return SoftStartAnnealing(options.pop("base_lr", 5e-4), total_steps, **options)
    base_lr = options.get("base_lr", 1e-3)
    _check_positive("base_lr", base_lr)
    if name == "constant":
        return float(base_lr)
    warmup_steps = int(round(options.get("warmup_fraction", 0.05) * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else base_lr,
        decay_steps=max(total_steps - warmup_steps, 1),
        alpha=options.get("alpha", 0.01),
        warmup_target=base_lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
