"""Bundle a trained QC model (and the segmenter) under ``Resources/Models`` with config, card and evaluation.

``python -m training.bundle --run RUN --bank BANK [--evaluation EVAL]`` writes

* ``Resources/Models/hippocampus/``: ``config.json``, ``weights.safetensors`` (float16 tensors: half the size, the
  network runs in float32 after loading), ``MODEL_CARD.md``; with ``--evaluation`` the card and
  ``config.json`` carry the validation table and ``evaluation/`` holds the table and plots;
* ``Resources/Models/hippocampus-segmenter/``: the small segmenter that makes the README's sample case.

Run it once before the evaluation (so the evaluation scores exactly the shipped weights) and once after.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from SegQCLib.network.config import OutputKind
from SegQCLib.network.package import CARD_FILE, WEIGHTS_FILE, file_sha256, load_model_package, save_model_package
from SegQCLib.network.qcresunet import count_parameters

from .segmenter import SEGMENTER_CONFIG_FILE, SEGMENTER_WEIGHTS_FILE

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPOSITORY / "Resources" / "Models" / "hippocampus"
DEFAULT_SEGMENTER_DIR = REPOSITORY / "Resources" / "Models" / "hippocampus-segmenter"
DATA_ATTRIBUTION = (
    "Trained on the Medical Segmentation Decathlon Task04 Hippocampus training data (Simpson et al., "
    "\"A large annotated medical image dataset for the development and evaluation of segmentation "
    "algorithms\", arXiv:1902.09063, 2019; images from the Vanderbilt University Medical Center), licensed "
    "CC-BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). The weights are a work derived from "
    "that data and are shared under the same license."
)
LICENSE = "CC-BY-SA-4.0 (derived from MSD Task04 Hippocampus)"
# The evaluation rows copied into config.json (the network's own figures).
NETWORK_ROWS = ("network (head)", "network (SegQC Ê)")


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def _loss_text(config, train_settings: dict) -> str:
    weight = train_settings.get("error_map_weight")
    if config.output == OutputKind.TRUTH.value:
        return (f"MAE(Dice) + MAE(NSD) + {weight}·(cross-entropy of the estimated truth near the query and the "
                f"truth + soft Dice of each class + {train_settings.get('error_dice_weight')}·soft Dice of the "
                "derived error maps)")
    return f"MAE(Dice) + MAE(NSD) + {weight}·(soft Dice + BCE) on the error maps"


def model_card(package, run: Path, settings: dict, summary: dict, evaluation: dict | None, table: str,
               note: str = "") -> str:
    config = package.config
    train_settings = settings.get("settings", {})
    shares = settings.get("epoch_shares", {})
    output = ("the estimated truth (softmax over background and classes; the error map of each class follows "
              "from it and the query, SegQC eq. 4)" if config.output == OutputKind.TRUTH.value
              else "one error logit per class")
    lines = [
        f"# {config.name} {config.version}: QC network for hippocampus segmentations (MRI T1)",
        "",
        "Predicts, from a T1 image and a segmentation of the hippocampus (1 = anterior, 2 = posterior), where",
        "the segmentation is wrong (one error-probability map per class)" + (
            " and its case Dice and NSD (1 mm)." if config.report_case_head else
            "; the case Dice is SegQC's estimate from those maps (the network's own Dice/NSD head is not "
            "reported: `report_case_head` is false, see below)."),
        "",
        "## Data and license",
        "",
        DATA_ATTRIBUTION,
        "",
        f"- Split by case id with a fixed seed (`training/splits/hippocampus.json`, extended when the data grew): "
        f"{len(settings.get('train_cases', []))} training cases, {len(settings.get('tuning_cases', []))} "
        "tuning cases (checkpoint choice, calibration), validation cases never used in training.",
        f"- Training queries: {settings.get('train_queries')} segmentations: the truth itself; local defects "
        "(a boundary pushed in or out over one patch, small missed parts and extra blobs, border swaps: good "
        "segmentations with one or two errors); broad defects (QCResUNet's SegGen, erosion/dilation, missing "
        "parts, label swaps, slice drop-outs); predictions of 3D U-Nets trained on the other folds of the "
        "training split, at snapshots from poor to real quality (plain and flip-TTA), and of smaller, briefly "
        "trained ones. Slice shifts, blocky resampling and over-smoothed contours are never used in training "
        "(they measure generalisation).",
    ]
    if shares:
        lines.append(
            f"- Epochs: mean true Dice {shares.get('mean_dice', float('nan')):.2f}; the truth itself "
            f"{100 * shares.get('identity_share', 0):.0f} %, near-perfect (Dice ≥ 0.9) "
            f"{100 * shares.get('near_perfect_share', 0):.0f} % of the samples; error voxels "
            f"{100 * shares.get('error_inside_query', 0):.0f} % inside / "
            f"{100 * shares.get('error_outside_query', 0):.0f} % outside the query mask.")
    lines += [
        "",
        "## Training",
        "",
        f"- Architecture: QCResUNet-style, widths {config.widths}, {count_parameters(package.model):,} parameters, "
        f"patch {config.patch_size_zyx} (z, y, x) at {config.target_spacing_zyx_mm} mm; the voxel head predicts "
        f"{output}; weights stored as float16.",
        f"- Loss: {_loss_text(config, train_settings)}; AdamW, lr {train_settings.get('learning_rate')} with "
        f"warm-up and cosine decay; batch {train_settings.get('batch_size')}; tempered Dice-bin balancing; "
        "joint spatial augmentation with targets recomputed, intensity augmentation.",
        f"- {summary.get('iterations')} iterations in {summary.get('seconds', 0) / 60:.0f} min on "
        f"{settings.get('device', 'cpu')} (a shared 2-core CPU) in the last stage. Checkpoint: `{run.name}`.",
    ]
    if config.output == OutputKind.TRUTH.value:
        lines.append(f"- Calibration: temperature {config.truth_temperature:g} on the truth logits, chosen on the "
                     "tuning cases (`python -m training.calibrate`).")
    if config.tta_flips:
        lines.append(f"- Inference: flip test-time augmentation over axes {config.tta_flips} (z, y, x) besides the "
                     "plain pass, averaged.")
    lines += ["- Reproduce: `training/README.md`.", ""]
    if note:
        lines += ["## How this checkpoint was made", "", note.strip(), ""]
    if evaluation is not None:
        lines += ["## Validation results", "", table.strip().replace("\n## ", "\n### ").lstrip("# "), ""]
    lines += [
        "## Limitations",
        "",
        "- Trained and validated on one dataset (MSD hippocampus crops, 1 mm T1): other structures, "
        "modalities or resolutions need their own training (`training/`).",
        "- Validation queries are perturbations (some of families never seen in training) and predictions "
        "of segmenters trained here (a 3D U-Net and a slice-wise 2D U-Net); errors of other segmentation "
        "methods and of human annotators may look different.",
        "- Use the estimates to rank cases and slices for review, not as a substitute for it.",
        "",
    ]
    return "\n".join(lines)


def bundle(run: Path, choose: str, bank: Path, out: Path, segmenter_out: Path, evaluation: Path | None,
           note: str = "") -> Path:
    package = load_model_package(run / choose)  # a package inside the run (best, best_calibrated, last...)
    settings = json.loads((run / "settings.json").read_text())
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    config = package.config
    config.trained = True
    config.training_data = "MSD Task04 Hippocampus (training split, training/splits/hippocampus.json)"
    config.license = LICENSE
    eval_data = None
    table = ""
    if evaluation is not None:
        eval_data = json.loads((evaluation / "results.json").read_text())
        table = (evaluation / "table.md").read_text()
        config.validation_metrics = {
            "split": "validation (training/splits/hippocampus.json)",
            "cases": len(eval_data["cases"]),
            "train_mean_dice": config.validation_metrics.get("train_mean_dice"),
            **{row: {k: round(v[0], 4) for k, v in eval_data["summaries"][row].items()}
               for row in NETWORK_ROWS if row in eval_data["summaries"]},
        }
    card = model_card(package, run, settings, summary, eval_data, table, note)
    save_model_package(out, config, _half(package.model.state_dict()), card=card, overwrite=True)
    if evaluation is not None:
        target = out / "evaluation"
        target.mkdir(exist_ok=True)
        for name in ("table.md", "scatter_dice.png", "correction_curves.png"):
            if (evaluation / name).exists():
                shutil.copy2(evaluation / name, target / name)
    segmenter_out.mkdir(parents=True, exist_ok=True)
    for name in (SEGMENTER_CONFIG_FILE, SEGMENTER_WEIGHTS_FILE):
        shutil.copy2(bank / "segmenter" / name, segmenter_out / name)
    (segmenter_out / CARD_FILE).write_text(
        "# Hippocampus segmenter (small 3D U-Net)\n\n"
        "Segments the hippocampus (1 = anterior, 2 = posterior) in 1 mm T1 crops. It is the *held-out* "
        "segmenter of `python -m training.bank`: trained briefly on the training split to make realistic "
        "model errors for QC evaluation, and used to make the README's sample case "
        "(`python -m training.sample_case`). It is deliberately small and imperfect; it is not a clinical "
        "segmentation model.\n\n" + DATA_ATTRIBUTION + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="training run folder")
    parser.add_argument("--choose", default="best_calibrated",
                        help="package inside the run: best_calibrated (default), best, best_mae, best_r or last")
    parser.add_argument("--bank", required=True, help="query bank folder (its segmenter/ is bundled)")
    parser.add_argument("--evaluation", default=None, help="evaluation folder to put into the card")
    parser.add_argument("--note", default="", help="file with a paragraph on how the checkpoint was made")
    parser.add_argument("--out", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--segmenter-out", default=str(DEFAULT_SEGMENTER_DIR))
    args = parser.parse_args(argv)
    out = bundle(Path(args.run), args.choose, Path(args.bank), Path(args.out), Path(args.segmenter_out),
                 Path(args.evaluation) if args.evaluation else None,
                 Path(args.note).read_text() if args.note else "")
    print(f"bundled {out} (weights sha256 {file_sha256(out / WEIGHTS_FILE)[:12]}, "
          f"{(out / WEIGHTS_FILE).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
