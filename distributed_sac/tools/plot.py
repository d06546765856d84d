"""Plots AverageReturn from the evaluator's metrics.jsonl of one or more runs into one figure.

    python -m distributed_sac.tools.plot --root_dir runs/a [--root_dir runs/b ...] \
        --output returns.png

Left panel: AverageReturn against train step (or env steps, --x_axis env_steps); right panel:
against minutes of training since each run's first evaluation. Both come from
learning_curve.read_curve: env steps count on across relaunches, and the time a stopped run
waited for its relaunch is left out. One line per run, labelled by its root_dir's base name,
with a marker at every evaluation. Needs json and matplotlib only (no TensorFlow), so it starts
fast.
"""

from __future__ import annotations

import math
import os

from absl import flags

from distributed_sac import layout
from distributed_sac.acting import evaluation
from distributed_sac.errors import UserError
from distributed_sac.runtime import entrypoint
from distributed_sac.tools import learning_curve

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "root_dir", [], "A run's root_dir (reads <root_dir>/eval/metrics.jsonl); repeatable."
)
flags.DEFINE_string("output", "returns.png", "Figure to write: .png, .svg or .pdf.")
flags.DEFINE_string("title", None, "Title over both panels.")
flags.DEFINE_integer("width_px", 1200, "Figure width in pixels (at --dpi).")
flags.DEFINE_integer("height_px", 500, "Figure height in pixels (at --dpi).")
flags.DEFINE_enum(
    "x_axis",
    "train_step",
    ["train_step", "env_steps"],
    "The left panel's x axis: learner train steps, or environment steps (the experience the "
    "learner had taken in at each evaluated train step).",
)
flags.DEFINE_integer("dpi", 100, "Dots per inch: a PNG is exactly width_px x height_px pixels.")

OUTPUT_EXTENSIONS = (".png", ".svg", ".pdf")
METRICS_FILE = os.path.join(layout.EVAL, layout.METRICS)


def read_run(root_dir: str) -> tuple[list[dict], int]:
    """(evaluations in file order, number of unreadable lines skipped) of a run (see
    evaluation.read_evaluations); a run with no readable evaluation is a UserError."""
    if not os.path.exists(root_dir):
        raise UserError(f"root_dir not found: {root_dir}")
    if not os.path.isdir(root_dir):
        raise UserError(f"root_dir is not a directory: {root_dir}")
    path = layout.RunDir(root_dir).metrics
    if not os.path.isfile(path):
        raise UserError(f"no evaluations yet in {root_dir} (no {METRICS_FILE})")
    try:
        evaluations, skipped = evaluation.read_evaluations(path)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not evaluations and not skipped:
        raise UserError(f"no evaluations yet in {root_dir} ({METRICS_FILE} is empty)")
    if not evaluations:
        raise UserError(f"no readable evaluation in {path} ({skipped} lines, none valid)")
    return evaluations, skipped


def run_label(root_dir: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(root_dir)))


MINUTES_PANEL = ("minutes", "minutes of training since the run's first evaluation")
TRAIN_STEP_PANELS = (("train_step", "train step"), MINUTES_PANEL)
ENV_STEPS_PANELS = (("env_steps", "environment steps"), MINUTES_PANEL)


def draw(runs, output: str, title, width_px, height_px, dpi, panels=TRAIN_STEP_PANELS):
    """Writes a figure of AverageReturn against each of `panels` ([(x key, x label)]) to
    `output`. `runs` holds (label, evaluations) or (label, evaluations, matplotlib line style)."""
    # Imported here: matplotlib costs 0.4 s of CPU, which plot refusing a bad flag or an
    # unreadable run does not need.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    for label, evaluations, *style in runs:
        returns = [e["AverageReturn"] for e in evaluations]
        for axes, (x_key, _) in zip(axes_row, panels):
            x = [e[x_key] for e in evaluations]
            axes.plot(x, returns, **{"marker": "o", "label": label, **(style[0] if style else {})})
    for axes, (_, x_label) in zip(axes_row, panels):
        axes.set_xlabel(x_label)
        axes.set_ylabel("AverageReturn")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    if title:
        figure.suptitle(title)
    try:
        figure.savefig(output, dpi=dpi)
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror or error}") from None


def with_minutes(root_dir: str) -> list[dict]:
    """The run's learning curve with "minutes" of training since its first evaluation."""
    curve = learning_curve.read_curve(root_dir)
    start = curve[0]["training_minutes"]
    return [dict(e, minutes=e["training_minutes"] - start) for e in curve]


def main() -> None:
    if not FLAGS.root_dir:
        raise UserError("plot needs at least one --root_dir")
    if FLAGS.width_px < 1 or FLAGS.height_px < 1 or FLAGS.dpi < 1:
        raise UserError("--width_px, --height_px and --dpi must be at least 1")
    output = entrypoint.check_output_path(FLAGS.output, OUTPUT_EXTENSIONS)
    runs = []
    for root_dir in FLAGS.root_dir:
        evaluations, skipped = read_run(root_dir)
        if FLAGS.x_axis == "env_steps" and any(
            e["env_steps"] is None for e in learning_curve.read_curve(root_dir)
        ):
            raise UserError(f"{root_dir}'s evaluations have no env_steps (an older run)")
        runs.append((root_dir, evaluations, skipped))
    draw(
        [(run_label(root_dir), with_minutes(root_dir)) for root_dir, _, _ in runs],
        output,
        FLAGS.title,
        FLAGS.width_px,
        FLAGS.height_px,
        FLAGS.dpi,
        TRAIN_STEP_PANELS if FLAGS.x_axis == "train_step" else ENV_STEPS_PANELS,
    )
    size = f" ({FLAGS.width_px}x{FLAGS.height_px} px)" if output.lower().endswith(".png") else ""
    print(f"wrote {output}{size}")
    for root_dir, evaluations, skipped in runs:
        last = evaluations[-1]
        note = f" (unreadable lines skipped: {skipped})" if skipped else ""
        finite = "" if math.isfinite(last["AverageReturn"]) else " (not finite)"
        print(
            f"{run_label(root_dir)}: {len(evaluations)} evaluations, last AverageReturn "
            f"{last['AverageReturn']:.6g}{finite} at train_step {last['train_step']}{note}"
        )


def run() -> None:
    entrypoint.run("plot", main)


if __name__ == "__main__":
    run()
