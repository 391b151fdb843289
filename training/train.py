"""Train the QC network on a query bank: ``python -m training.train --data BANK --out RUN``.

Loss, with a network whose voxel head predicts errors (``output: error``, QCResUNet §2.4): MAE on the
case Dice and NSD + λ·(soft Dice + BCE) on the per-class error maps, optionally + a Pearson term
(1 - r of predicted vs true Dice over the batch).  With ``output: truth`` (the head predicts the truth,
Ê follows from it and the query) the voxel part is a segmentation loss on the truth, cross-entropy
averaged over the region near the query and the truth (within :data:`NEAR_RADIUS_VOXELS`; far background
weighs :data:`FAR_WEIGHT`) + soft Dice of each class, + ``error_dice_weight`` · soft Dice of the derived
error maps (so that finding the errors, not only segmenting, is rewarded).  Epochs draw queries by
:func:`training.dataset.sampling_weights`.  AdamW with linear warm-up then cosine decay, stepped
every iteration (with ``--max-minutes`` the schedule runs on the larger of the iteration and the time
fractions, so a time-capped run still ends annealed); mixed precision on CUDA; seeded.  A checkpoint
(model, optimiser, scaler,
random states) is written atomically every ``--checkpoint-every`` iterations and ``--resume`` continues
from it.  A few training cases are held back as a *tuning* set (never the validation split): the
checkpoints with the best tuning Dice MAE and the best tuning Pearson r are kept as model packages
``best_mae/`` and ``best_r/``, and the best *combined* criterion (:func:`selection_score`: the SegQC
estimate's Dice MAE, the error-map Dice and the Dice estimated for perfect queries together, so a
collapsed error head cannot ship behind a good Dice head) as ``best/``; ``metrics.jsonl`` logs every
evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from SegQCLib.network.config import ModelConfig
from SegQCLib.network.package import check_state_dict, load_model_package, save_model_package
from SegQCLib.network.qcresunet import build_model, count_parameters, one_hot
from SegQCLib.quality.evaluation import mae, pearson_r

from .bank import load_bank
from .dataset import AugmentParams, Batch, QueryDataset

logger = logging.getLogger("training.train")

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
SETTINGS_FILE = "settings.json"
SOFT_DICE_SMOOTH = 1.0
MIN_PEARSON_BATCH = 3
# Truth-output loss: cross-entropy is averaged over voxels within this distance of the query or the truth;
# the far background (trivially right) weighs FAR_WEIGHT of that.
NEAR_RADIUS_VOXELS = 3
FAR_WEIGHT = 0.1
# selection_score = estimate MAE + w_map * (1 - error-map Dice) + w_perfect * (1 - estimated Dice of perfect queries)
SELECTION_MAP_WEIGHT = 0.25
SELECTION_PERFECT_WEIGHT = 0.5


@dataclass
class TrainSettings:
    iterations: int = 1200
    batch_size: int = 4
    learning_rate: float = 2e-3
    min_learning_rate: float = 2e-5
    warmup_iterations: int = 50
    weight_decay: float = 1e-4
    error_map_weight: float = 1.0  # λ
    pearson_weight: float = 0.0
    epoch_size: int = 400  # queries per balanced epoch
    tuning_cases: int = 8
    tuning_queries: int = 80  # evaluated every ``evaluate_every`` iterations: keep it cheap
    evaluate_every: int = 150
    checkpoint_every: int = 50
    seed: int = 0
    mask_only: bool = False
    max_minutes: float = 0.0  # 0 = no limit; otherwise stop (and save) after this wall time
    threads: int = 2
    model_overrides: dict = field(default_factory=dict)
    init: str = ""  # model package whose weights start the run (fine-tuning)
    empty_query_probability: float = 0.0  # 1.0 = segmentation pre-training (no query shown)
    error_dice_weight: float = 0.5  # truth output only: soft Dice of the derived error maps
    # Train only the case (Dice/NSD regression) head, the rest frozen, on the case losses alone: a head left
    # saturated by segmentation pre-training (every target 0 there) is re-learnt on the trained features.
    case_head_only: bool = False


def _soft_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - batch-level soft Dice per channel, averaged (defined even when a sample has no positive voxel)."""
    dims = (0, 2, 3, 4)
    return 1.0 - ((2 * (prob * target).sum(dims) + SOFT_DICE_SMOOTH)
                  / (prob.sum(dims) + target.sum(dims) + SOFT_DICE_SMOOTH)).mean()


def near_region(query: torch.Tensor, truth: torch.Tensor, radius: int = NEAR_RADIUS_VOXELS) -> torch.Tensor:
    """(B, Z, Y, X) bool: voxels within ``radius`` (chessboard) of the query's or the truth's foreground."""
    foreground = ((query > 0) | (truth > 0)).float().unsqueeze(1)
    return torch.nn.functional.max_pool3d(foreground, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def truth_loss(output, batch: Batch, labels: Sequence[int], settings: TrainSettings
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Region-weighted cross-entropy + soft Dice on the truth, + soft Dice of the derived error maps."""
    logits = output.truth_logits.float()
    target = torch.zeros_like(batch.truth)
    for index, label in enumerate(labels):  # label values -> channel indices (0 = background)
        target[batch.truth == label] = index + 1
    ce = F.cross_entropy(logits, target, reduction="none")
    near = near_region(batch.query, batch.truth).float()
    ce = (ce * near).sum() / near.sum().clamp_min(1.0) + FAR_WEIGHT * (ce * (1 - near)).sum() / (
        (1 - near).sum().clamp_min(1.0))
    prob = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, len(labels) + 1).permute(0, 4, 1, 2, 3)[:, 1:].float()
    seg_dice = _soft_dice(prob, onehot)
    error_dice = _soft_dice(torch.sigmoid(output.error_logits.float()), batch.error_maps)
    loss = ce + seg_dice + settings.error_dice_weight * error_dice
    return loss, {"ce": ce.item(), "seg_dice": seg_dice.item(), "error_dice": error_dice.item()}


def error_loss(output, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """QCResUNet's voxel loss: batch soft Dice + BCE on the error maps."""
    logits = output.error_logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, batch.error_maps)
    soft_dice = _soft_dice(torch.sigmoid(logits), batch.error_maps)
    return soft_dice + bce, {"soft_dice": soft_dice.item(), "bce": bce.item()}


def multitask_loss(output, batch: Batch, settings: TrainSettings, labels: Sequence[int] = (1, 2)
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """MAE(Dice) + MAE(NSD) + λ·(voxel loss of the output kind) [+ w·(1 - Pearson r of Dice)].

    In segmentation pre-training (every query blanked) the case terms are left out: their targets are all
    0 there, which would only saturate the case head.  With ``case_head_only`` the voxel terms are left out.
    """
    dice_mae = (output.dice.float() - batch.dice).abs().mean()
    case_weight = 0.0 if settings.empty_query_probability >= 1.0 else 1.0
    if settings.case_head_only:
        loss, parts = case_weight * dice_mae, {}
    else:
        if output.truth_logits is not None:
            voxel, parts = truth_loss(output, batch, labels, settings)
        else:
            voxel, parts = error_loss(output, batch)
        loss = case_weight * dice_mae + settings.error_map_weight * voxel
    parts["dice_mae"] = dice_mae.item()
    if output.nsd is not None:
        nsd_mae = (output.nsd.float() - batch.nsd).abs().mean()
        loss = loss + case_weight * nsd_mae
        parts["nsd_mae"] = nsd_mae.item()
    if settings.pearson_weight > 0 and batch.dice.numel() >= MIN_PEARSON_BATCH:
        pred = output.dice.float() - output.dice.float().mean()
        true = batch.dice - batch.dice.mean()
        r = (pred * true).sum() / (pred.norm() * true.norm() + 1e-6)
        loss = loss + settings.pearson_weight * (1.0 - r)
        parts["pearson"] = r.item()
    parts["loss"] = loss.item()
    return loss, parts


def estimated_case_dice(error_prob: torch.Tensor, query_onehot: torch.Tensor) -> torch.Tensor:
    """SegQC's pooled multi-class Dice estimate per sample, from Ê (B, C, ...) and the one-hot query (B, C, ...)."""
    dims = tuple(range(2, error_prob.dim()))
    m = query_onehot.sum(dims)
    s_in = (query_onehot * error_prob).sum(dims)
    e = error_prob.sum(dims)
    intersection = (m - s_in).sum(1)
    total = (2 * m + e - 2 * s_in).sum(1)
    return torch.where(total > 1e-9, 2 * intersection / total.clamp_min(1e-9), torch.ones_like(total))


def selection_score(metrics: dict[str, float]) -> float:
    """Lower is better: estimate MAE + weighted (1 - error-map Dice) + weighted (1 - est. Dice of perfect queries)."""
    perfect = metrics.get("perfect_est_dice", math.nan)
    perfect_term = SELECTION_PERFECT_WEIGHT * (1.0 - perfect) if np.isfinite(perfect) else 0.0
    return (metrics["est_dice_mae"] + SELECTION_MAP_WEIGHT * (1.0 - metrics["error_map_dice"]) + perfect_term)


def training_progress(iteration: int, elapsed_s: float, settings: TrainSettings) -> float:
    """Fraction of the run done: iterations, or wall time when ``max_minutes`` caps the run and is ahead."""
    progress = iteration / max(1, settings.iterations)
    if settings.max_minutes > 0:
        progress = max(progress, elapsed_s / (settings.max_minutes * 60))
    return min(1.0, progress)


def learning_rate_at(iteration: int, progress: float, settings: TrainSettings) -> float:
    """Linear warm-up over the first iterations, then cosine decay to the minimum at progress 1."""
    if iteration < settings.warmup_iterations:
        return settings.learning_rate * (iteration + 1) / settings.warmup_iterations
    start = settings.warmup_iterations / max(1, settings.iterations)
    progress = (progress - start) / max(1e-9, 1 - start)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return settings.min_learning_rate + (settings.learning_rate - settings.min_learning_rate) * cosine


@torch.no_grad()
def evaluate_dataset(model, dataset: QueryDataset, device: torch.device, batch_size: int = 8) -> dict[str, float]:
    """On every query of ``dataset``, without augmentation: the head's Dice MAE / r, the SegQC estimate's
    Dice MAE / r, the error-map Dice, the estimated Dice of perfect queries, and :func:`selection_score`."""
    model.eval()
    preds, estimates, trues, intersection, total = [], [], [], 0.0, 0.0
    labels = model.config.labels
    for start in range(0, len(dataset), batch_size):
        batch = dataset.batch(range(start, min(len(dataset), start + batch_size)), None)
        query = one_hot(batch.query.to(device), model.config.mask_labels)
        output = model(batch.image.to(device), query)
        preds.append(output.dice.float().cpu().numpy())
        trues.append(batch.dice.numpy())
        error_prob = torch.sigmoid(output.error_logits.float()).cpu()
        estimates.append(estimated_case_dice(error_prob, one_hot(batch.query, labels)).numpy())
        binary = (error_prob > 0.5).float()
        intersection += float((binary * batch.error_maps).sum())
        total += float(binary.sum() + batch.error_maps.sum())
    pred, estimate, true = np.concatenate(preds), np.concatenate(estimates), np.concatenate(trues)
    perfect = dataset.identity[: len(true)]
    metrics = {"dice_mae": mae(pred, true), "dice_r": pearson_r(pred, true), "est_dice_mae": mae(estimate, true),
               "est_dice_r": pearson_r(estimate, true),
               "error_map_dice": 2 * intersection / total if total else 1.0,
               "perfect_est_dice": float(estimate[perfect].mean()) if perfect.any() else math.nan,
               "queries": int(len(true))}
    metrics["selection"] = selection_score(metrics)
    return metrics


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _random_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


class Trainer:
    def __init__(self, bank_dir: str | os.PathLike, out_dir: str | os.PathLike, settings: TrainSettings,
                 config: ModelConfig | None = None, max_cases: int | None = None) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.set_num_threads(settings.threads)
        cases = load_bank(bank_dir, "train")
        if max_cases is not None:
            cases = cases[:max_cases]
        n_tune = min(settings.tuning_cases, max(1, len(cases) // 5))
        order = np.random.default_rng(settings.seed).permutation(len(cases))
        tuning = [cases[i] for i in sorted(order[:n_tune])]
        training = [cases[i] for i in sorted(order[n_tune:])]
        self.config = config or ModelConfig.from_dict(settings.model_overrides, base=ModelConfig(),
                                                      require_complete=False)
        self.config.training_data = str(bank_dir)
        self.train_set = QueryDataset(training, self.config, AugmentParams(), mask_only=settings.mask_only,
                                      empty_query_probability=settings.empty_query_probability)
        self.tune_set = QueryDataset(tuning, self.config, mask_only=settings.mask_only)
        self.tune_set.keep(settings.tuning_queries)
        shares = self.train_set.error_voxel_shares()
        self.train_mean_dice = shares["mean_dice"]
        logger.info("Training epochs: mean Dice %.3f, truth %.1f %%, near-perfect %.1f %%; error voxels %.1f %% "
                    "inside / %.1f %% outside the query mask", shares["mean_dice"], 100 * shares["identity_share"],
                    100 * shares["near_perfect_share"], 100 * shares["error_inside_query"],
                    100 * shares["error_outside_query"])
        torch.manual_seed(settings.seed)
        self.model = build_model(self.config).to(self.device)
        if settings.init:
            start = load_model_package(settings.init)
            check_state_dict(self.model, start.model.state_dict(), settings.init)
            self.model.load_state_dict(start.model.state_dict())
            logger.info("Initialised from %s", settings.init)
        if settings.case_head_only:
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(name.startswith("case_head."))
            for layer in self.model.case_head:
                if isinstance(layer, torch.nn.Linear):
                    layer.reset_parameters()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self.use_amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.rng = np.random.default_rng(settings.seed)
        self.iteration = 0
        self.elapsed_before = 0.0
        self.started = 0.0
        self.best = {"dice_mae": math.inf, "dice_r": -math.inf, "selection": math.inf}
        self.history: list[dict] = []
        (self.out / SETTINGS_FILE).write_text(json.dumps(
            {"settings": asdict(settings), "train_cases": [c.case_id for c in training],
             "tuning_cases": [c.case_id for c in tuning], "train_queries": len(self.train_set),
             "train_mean_dice": self.train_mean_dice, "epoch_shares": shares,
             "parameters": count_parameters(self.model),
             "device": str(self.device)}, indent=1) + "\n")

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        _atomic_torch_save({
            "iteration": self.iteration, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "elapsed_s": self.elapsed(), "scaler": self.scaler.state_dict(), "best": self.best,
            "rng": self.rng.bit_generator.state, "random_states": _random_states(),
            "config": self.config.to_dict(), "settings": asdict(self.settings),
        }, self.out / CHECKPOINT_FILE)

    def resume(self) -> bool:
        path = self.out / CHECKPOINT_FILE
        if not path.exists():
            return False
        # Our own checkpoint (optimizer state, numpy RNG state): a full unpickle of a trusted local file.
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.elapsed_before = float(state["elapsed_s"])
        self.scaler.load_state_dict(state["scaler"])
        self.best = state["best"]
        self.rng.bit_generator.state = state["rng"]
        random.setstate(state["random_states"]["python"])
        np.random.set_state(state["random_states"]["numpy"])
        torch.set_rng_state(state["random_states"]["torch"])
        self.iteration = int(state["iteration"])
        logger.info("Resumed from %s at iteration %d", path, self.iteration)
        return True

    def save_package(self, name: str, metrics: dict[str, float]) -> Path:
        self.config.trained = True
        self.config.validation_metrics = {"tuning": metrics, "iteration": self.iteration,
                                          "train_mean_dice": self.train_mean_dice}
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return save_model_package(self.out / name, self.config, state, overwrite=True)

    # --- loop ---------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Training wall time in seconds, including the runs this one resumed."""
        return self.elapsed_before + (time.perf_counter() - self.started if self.started else 0.0)

    def _train_mode(self) -> None:
        """Training mode, except with a frozen backbone: its dropout and norms then behave as at inference."""
        self.model.train(not self.settings.case_head_only)

    def _evaluate(self) -> dict:
        metrics = evaluate_dataset(self.model, self.tune_set, self.device)
        self._train_mode()
        if self.settings.case_head_only:  # the maps are frozen: only the head's own Dice error can still change
            metrics["selection"] = metrics["dice_mae"]
        record = {"iteration": self.iteration, "elapsed_s": round(self.elapsed(), 1),
                  "lr": self.optimizer.param_groups[0]["lr"], **{k: round(v, 5) for k, v in metrics.items()}}
        if metrics["dice_mae"] < self.best["dice_mae"]:
            self.best["dice_mae"] = metrics["dice_mae"]
            self.save_package("best_mae", metrics)
            record["best_mae"] = True
        if np.isfinite(metrics["dice_r"]) and metrics["dice_r"] > self.best["dice_r"]:
            self.best["dice_r"] = metrics["dice_r"]
            self.save_package("best_r", metrics)
            record["best_r"] = True
        if metrics["selection"] < self.best.get("selection", math.inf):
            self.best["selection"] = metrics["selection"]
            self.save_package("best", metrics)
            record["best"] = True
        self.history.append({"iteration": self.iteration, "metrics": metrics})
        with open(self.out / METRICS_FILE, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        logger.info("eval %s", record)
        return record

    def train(self) -> dict:
        settings = self.settings
        self.started = time.perf_counter()
        running: dict[str, float] = {}
        epoch: list[int] = []
        self._train_mode()
        while self.iteration < settings.iterations:
            if not epoch:
                epoch = list(self.train_set.epoch_indices(settings.epoch_size, self.rng))
            indices, epoch = epoch[: settings.batch_size], epoch[settings.batch_size:]
            batch = self.train_set.batch(indices, self.rng).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                output = self.model(batch.image, one_hot(batch.query, self.config.mask_labels))
            loss, parts = multitask_loss(output, batch, settings, self.config.labels)
            lr = learning_rate_at(self.iteration, training_progress(self.iteration, self.elapsed(), settings), settings)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.iteration += 1
            for key, value in parts.items():
                running[key] = 0.9 * running.get(key, value) + 0.1 * value
            self._progress(running)
            timed_out = settings.max_minutes > 0 and self.elapsed() > settings.max_minutes * 60
            if self.iteration % settings.checkpoint_every == 0 or timed_out:
                self.save_checkpoint()
            if self.iteration % settings.evaluate_every == 0 or self.iteration == settings.iterations or timed_out:
                self._evaluate()
            if timed_out:
                logger.warning("Stopping at iteration %d: --max-minutes %.1f reached", self.iteration,
                               settings.max_minutes)
                break
        self.save_checkpoint()
        last = self.history[-1] if self.history and self.history[-1]["iteration"] == self.iteration else None
        final = last["metrics"] if last else evaluate_dataset(self.model, self.tune_set, self.device)
        self.save_package("last", final)
        summary = {"iterations": self.iteration, "seconds": round(self.elapsed(), 1),
                   "best": self.best, "final_tuning": final}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def _progress(self, running: dict[str, float]) -> None:
        elapsed = self.elapsed()
        done = self.iteration / self.settings.iterations
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        text = " ".join(f"{k}={v:.3f}" for k, v in running.items())
        line = f"\r[{bar}] {self.iteration}/{self.settings.iterations} {elapsed / 60:.1f} min {text}"
        if sys.stderr.isatty():
            sys.stderr.write(line)
            sys.stderr.flush()
        elif self.iteration % 25 == 0:
            logger.info(line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="query bank folder made by python -m training.bank")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, metrics, model packages)")
    parser.add_argument("--iterations", type=int, default=TrainSettings.iterations)
    parser.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    parser.add_argument("--lr", type=float, default=TrainSettings.learning_rate)
    parser.add_argument("--lambda", dest="error_map_weight", type=float, default=TrainSettings.error_map_weight)
    parser.add_argument("--pearson-weight", type=float, default=TrainSettings.pearson_weight)
    parser.add_argument("--evaluate-every", type=int, default=TrainSettings.evaluate_every)
    parser.add_argument("--checkpoint-every", type=int, default=TrainSettings.checkpoint_every)
    parser.add_argument("--tuning-cases", type=int, default=TrainSettings.tuning_cases)
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    parser.add_argument("--mask-only", action="store_true", help="zero image input (the mask-only baseline)")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop after this wall time (0 = none)")
    parser.add_argument("--max-cases", type=int, default=None, help="use only the first N bank cases (tests)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-config", default=None, help="JSON file of ModelConfig fields to override")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--init", default=None, help="start from this model package's weights (same architecture)")
    parser.add_argument("--warmup", type=int, default=TrainSettings.warmup_iterations, help="warm-up iterations")
    parser.add_argument("--empty-query-probability", type=float, default=0.0,
                        help="share of samples shown without their query (1 = segmentation pre-training)")
    parser.add_argument("--error-dice-weight", type=float, default=TrainSettings.error_dice_weight,
                        help="truth-output models: weight of the derived error maps' soft Dice")
    parser.add_argument("--tuning-queries", type=int, default=TrainSettings.tuning_queries)
    parser.add_argument("--case-head-only", action="store_true",
                        help="re-initialise and train only the case Dice/NSD head (the rest frozen)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = json.loads(Path(args.model_config).read_text()) if args.model_config else {}
    settings = TrainSettings(
        iterations=args.iterations, batch_size=args.batch_size, learning_rate=args.lr,
        error_map_weight=args.error_map_weight, pearson_weight=args.pearson_weight,
        evaluate_every=args.evaluate_every, checkpoint_every=args.checkpoint_every, tuning_cases=args.tuning_cases,
        seed=args.seed, mask_only=args.mask_only, max_minutes=args.max_minutes, threads=args.threads,
        warmup_iterations=args.warmup, init=args.init or "", empty_query_probability=args.empty_query_probability,
        error_dice_weight=args.error_dice_weight, tuning_queries=args.tuning_queries,
        case_head_only=args.case_head_only,
        model_overrides=overrides)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    trainer = Trainer(args.data, args.out, settings, max_cases=args.max_cases)
    if args.resume:
        trainer.resume()
    summary = trainer.train()
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
