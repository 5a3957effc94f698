"""``python -m zoo_lightning selftrain``: Noisy Student self-training (Xie et al., 2020), one versioned fit per round.

    python -m zoo_lightning selftrain --config resnet20_cifar.yaml --rounds 2 --data.labeled_per_class 400

Round 0 trains the teacher on the labeled images (``--teacher CKPT`` starts from a trained one
instead). Every later round, the teacher labels the data's unlabeled images as they are (no
augmentation, no dropout), with soft labels (its class probabilities) or ``--hard`` ones, keeping
those whose confidence reaches ``--threshold``; then a student, of the same backbone or a larger one
(``--students``), trains from scratch on the labeled and the pseudo-labeled images with noise:
RandAugment drawn per image on the device (``--num_ops``, ``--magnitude``), and ``--dropout`` and
stochastic depth (``--drop_path``) where the backbone has them. The student is the next round's teacher.

Every round is a run of its own, ``round_0``, ``round_1``, ... in the config's experiment folder,
claimed before it starts as sweep's runs are, with a ``selftrain.json`` naming its session, round and
teacher; a student's pseudo-labels stay in its folder (``pseudo_labels.pt``). ``report`` groups the
rounds of each session. Options this command does not know go to every round's ``fit``;
``--student_args "..."`` go to the students' alone. Ctrl-C or SIGTERM stops the running fit (which
keeps its last.ckpt) and the session.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import shlex
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from zoo_lightning.commands.fit_runner import FitRunner
from zoo_lightning.models import model_entry
from zoo_lightning.options import Fraction, NonNegativeInt, PositiveInt
from zoo_lightning.parsing import CommandParser, resolve_config
from zoo_lightning.signals import StopSignals

__all__ = ["main", "pseudo_label", "student_arguments", "RECORD", "LABELS"]

RECORD = "selftrain.json"  # what a round is, for report
LABELS = "pseudo_labels.pt"  # the teacher's labels a student trained on


class PseudoLabelCounts(TypedDict):
    """What :func:`pseudo_label` labeled: the images, those kept by the threshold, the confidence, the file."""

    images: int
    kept: int
    confidence: dict[str, float]  # quantile ("0.10", "0.50", "0.90") -> the top probability there
    file: str


def pseudo_label(
    teacher: str | Path, out: Path, threshold: float = 0.0, batch_size: int = 512, device: str | None = None
) -> PseudoLabelCounts:
    """The teacher's class probabilities on its data's unlabeled images, written to ``out``; returns their counts
    (all of them, and those whose top probability reaches ``threshold``) and confidence quantiles.

    The data is the teacher checkpoint's own DataModule (its class and options, its normalization), so
    the images are exactly those a student with the same data options trains on; the file carries
    their digest, which the student's DataModule checks.
    """
    import torch

    from zoo_lightning.checkpoints import datamodule_args, datamodule_state, load_backbone
    from zoo_lightning.data.pseudo_labels import images_digest
    from zoo_lightning.data.splits import TRAINING_SET_OPTIONS
    from zoo_lightning.progress import progress

    model, checkpoint = load_backbone(teacher, "the teacher checkpoint")
    spec = datamodule_args(checkpoint, leave_out=TRAINING_SET_OPTIONS)
    if spec is None:
        raise ValueError(f"The teacher checkpoint {teacher} names no DataModule; train it with `fit` first.")
    module, _, name = spec["class_path"].rpartition(".")
    # Without the teacher's own pseudo-labels (datamodule_args leaves them out): it labels, it does not train.
    data = getattr(importlib.import_module(module), name)(**spec["init_args"])
    data.prepare_data()
    data.setup("fit")
    state = datamodule_state(checkpoint)
    if state:
        data.load_state_dict(state)  # normalize exactly as the teacher was trained
    images = data.unlabeled_images()
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(target)
    chunks = []
    with torch.inference_mode(), progress("The teacher labels the unlabeled images", len(images)) as advance:
        for start in range(0, len(images), batch_size):
            batch = data.on_after_batch_transfer(images[start : start + batch_size].to(target), 0)
            chunks.append(model(batch).float().softmax(dim=1).cpu())
            advance(len(batch))
    probabilities = torch.cat(chunks).half()  # 2 bytes a class: 36,000 CIFAR-10 images take 0.7 MB
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "probabilities": probabilities,
            "class_names": list(data.class_names),
            "digest": images_digest(images),
            "teacher": str(teacher),
        },
        out,
    )
    confidence = probabilities.float().max(dim=1).values  # as the student's DataModule will read them
    quantiles = {f"{q:.2f}": round(float(confidence.quantile(q)), 4) for q in (0.1, 0.5, 0.9)}
    return {
        "images": len(images),
        "kept": int((confidence >= threshold).sum()),
        "confidence": quantiles,
        "file": str(out),
    }


def student_arguments(args: argparse.Namespace, backbone: str | None, labels: Path) -> list[str]:
    """The fit options that make a round a noisy student: its backbone, pseudo-labels and noise."""
    extra = [] if backbone is None else ["--model.backbone", backbone]
    extra += [
        "--data.pseudo_labels",
        str(labels),
        "--data.pseudo_label_mode",
        "hard" if args.hard else "soft",
        "--data.pseudo_label_threshold",
        str(args.threshold),
    ]
    if args.num_ops > 0:
        extra += [
            "--data.pipeline.class_path",
            "zoo_lightning.data.RandAugmentPipeline",
            "--data.pipeline.init_args.num_ops",
            str(args.num_ops),
            "--data.pipeline.init_args.magnitude",
            str(args.magnitude),
        ]
    noise = {k: v for k, v in (("drop_path", args.drop_path), ("dropout", args.dropout)) if v is not None}
    if noise:
        extra += ["--model.backbone_kwargs", json.dumps(noise)]
    return extra + shlex.split(args.student_args or "")


@dataclass
class Round:
    number: int
    folder: Path
    returncode: int
    seconds: float


def _checkpoint(folder: Path) -> Path | None:
    for name in ("best.ckpt", "last.ckpt"):  # best needs a validation split; last is the end of training
        if (folder / "checkpoints" / name).is_file():
            return folder / "checkpoints" / name
    return None


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m zoo_lightning selftrain",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="the recipe of every round (a path or a shipped config's name)")
    parser.add_argument("--rounds", type=PositiveInt, default=2, help="student rounds after the teacher (default 2)")
    parser.add_argument("--teacher", help="a trained teacher's checkpoint: round 0 is not trained")
    parser.add_argument(
        "--students",
        nargs="+",
        metavar="BACKBONE",
        help="the students' backbones, one per round (the last one repeats); default: the config's",
    )
    parser.add_argument("--hard", action="store_true", help="hard pseudo-labels (the top class) instead of soft ones")
    parser.add_argument(
        "--threshold",
        type=Fraction,
        default=0.0,
        help="the teacher confidence an unlabeled image needs, in [0, 1) (default 0: all of them)",
    )
    parser.add_argument(
        "--num_ops", type=NonNegativeInt, default=2, help="RandAugment operations per image (0: none; default 2)"
    )
    parser.add_argument("--magnitude", type=NonNegativeInt, default=9, help="RandAugment magnitude, 0..30 (default 9)")
    parser.add_argument("--drop_path", type=Fraction, help="stochastic depth of the students (backbones that have it)")
    parser.add_argument("--dropout", type=Fraction, help="dropout of the students (backbones that have it)")
    parser.add_argument("--student_args", help="more fit options for the students alone, as one string")
    parser.add_argument(
        "--label_batch_size", type=PositiveInt, default=512, help="images per teacher batch when labeling"
    )
    return parser


def main(argv: list[str]) -> None:
    args, passthrough = _parser().parse_known_args(argv)
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise FileNotFoundError(
            f"--teacher {args.teacher!r} does not exist: pass a run's checkpoints/best.ckpt, or leave "
            "it out to train the teacher in round 0."
        )
    config = resolve_config(args.config)
    with StopSignals() as stop:
        runner = FitRunner(config, passthrough, stop)
        students = args.students or [None]
        for backbone in students:  # every round's options are refused or accepted before round 0 trains
            runner.check(student_arguments(args, backbone, runner.experiment / LABELS))
            if backbone is not None and ":" not in backbone:
                model_entry(backbone)  # an unknown name is refused, with the closest ones, before round 0 trains
        rounds = _rounds(args, runner, students, stop)
    experiment = runner.experiment.name
    print("\n| round | run | exit code | minutes |\n|---|---|---|---|")
    for r in rounds:
        print(f"| {r.number} | {experiment}/{r.folder.name} | {r.returncode} | {r.seconds / 60:.1f} |")
    if stop.exit_status is not None:
        sys.exit(stop.exit_status)
    if any(r.returncode for r in rounds) or len(rounds) < args.rounds + (args.teacher is None):
        sys.exit(1)


def _rounds(args: argparse.Namespace, runner: FitRunner, students: list[str | None], stop: StopSignals) -> list[Round]:
    """The teacher's round (unless one is given) and the students' rounds, each a fit in a folder of its own."""
    experiment = runner.experiment.name
    session = f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    teacher: Path | None = Path(args.teacher) if args.teacher else None
    teacher_run: str | None = None
    rounds: list[Round] = []
    for number in range(0 if teacher is None else 1, args.rounds + 1):
        folder = runner.reserve(f"round_{number}")
        record: dict[str, Any] = {
            "session": session,
            "round": number,
            "role": "teacher" if number == 0 else "student",
            "teacher": teacher_run,
            "teacher_checkpoint": None if teacher is None else str(teacher),
        }
        extra: list[str] = []
        if number > 0:
            assert teacher is not None  # --teacher, or the round before's checkpoint (the loop stops without one)
            backbone = students[min(number - 1, len(students) - 1)]
            print(f"[selftrain {session}] round {number}: {teacher} labels the unlabeled images", flush=True)
            try:
                labels = pseudo_label(teacher, folder / LABELS, args.threshold, args.label_batch_size)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # reserved for a round that cannot start
                raise
            record["pseudo_labels"] = {"mode": "hard" if args.hard else "soft", "threshold": args.threshold, **labels}
            record["backbone"] = backbone or "(the config's)"
            extra = student_arguments(args, backbone, folder / LABELS)
        (folder / RECORD).write_text(json.dumps(record, indent=1))
        print(f"[selftrain {session}] round {number}/{args.rounds}: {experiment}/{folder.name}", flush=True)
        start = time.perf_counter()
        returncode = runner.fit(folder, extra, records=(RECORD, LABELS))
        rounds.append(Round(number, folder, returncode, time.perf_counter() - start))
        if stop.received is not None:
            print(f"[selftrain] stopped by {stop.name} in round {number}.", file=sys.stderr)
            break
        teacher, teacher_run = _checkpoint(folder), f"{experiment}/{folder.name}"
        if returncode or teacher is None:
            why = f"exit code {returncode}" if returncode else "it wrote no checkpoint"
            print(
                f"[selftrain] round {number} failed ({why}); the next round needs its weights: stopping.",
                file=sys.stderr,
            )
            break
    return rounds
