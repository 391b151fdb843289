"""``segqc model init|info|convert``: write an untrained model package, show a package's config and card,
convert an older package's ``weights.pt`` to ``weights.safetensors``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..files import check_output_folder
from ..network.config import ModelConfig, UnknownKeys, read_config, read_config_json
from ..network.domain import DOMAIN_FILE, read_domain_profile
from ..network.package_layout import LEGACY_WEIGHTS_FILE, WEIGHTS_FILE
from ..network.package_summary import read_package_summary

# `model info` reads the package without torch (a fast start, and it works where torch is missing); `init`,
# `convert` and `info --flops` import the network modules when they run.

EXIT_OK = 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("model", help="create or inspect QC model packages",
                                   description="Create an untrained model package or inspect one.")
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="write an untrained (randomly initialised) model package",
        description="Write config.json, weights.safetensors (random, seeded) and MODEL_CARD.md; training starts "
                    "from it. --config gives a JSON object whose keys override the default configuration; a key "
                    "that is not a configuration field is refused (segqc model info --json shows the fields).")
    init.add_argument("--out", required=True, help="package folder to create")
    init.add_argument("--config", help="JSON file with configuration fields overriding the defaults (default: none)")
    init.add_argument("--seed", type=int, default=0, help="random seed of the initial weights (default %(default)s)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing package folder (default: refuse to overwrite)")
    init.set_defaults(func=run_init)
    info = actions.add_parser("info", help="print a package's configuration and model card")
    info.add_argument("path", help="model package folder")
    info.add_argument("--json", action="store_true",
                      help="print only the configuration as JSON (default: configuration, size and model card)")
    info.add_argument("--flops", action="store_true", help="also count the network's GFLOPs per patch (loads torch)")
    info.set_defaults(func=run_info)
    convert = actions.add_parser(
        "convert", help=f"rewrite an older package's {LEGACY_WEIGHTS_FILE} as {WEIGHTS_FILE} (same tensors)",
        description=f"Rewrite {LEGACY_WEIGHTS_FILE} (a torch pickle) as {WEIGHTS_FILE} in place: the same tensors "
                    "and dtypes; config.json gets the new file's sha256 (a package without one gets it too), the "
                    "card is untouched. Safe to run again after an interruption.")
    convert.add_argument("path", help="model package folder")
    convert.set_defaults(func=run_convert)
    profile = actions.add_parser(
        "profile", help="add or refresh a package's domain profile (domain.json) from its training data",
        description="Measure the model's training cases (spacing, field of view, normalised intensities, class "
                    "volumes and extents, the network's mirror disagreement) and write domain.json into the package; "
                    "every run then checks its input against it (report.json: domain). Give the training cases only, "
                    "so that validation cases stay unseen.")
    profile.add_argument("path", help="model package folder")
    profile.add_argument("--data", required=True,
                         help="labelled dataset in nnU-Net raw layout: imagesTr/CASE_0000.nii.gz, "
                              "labelsTr/CASE.nii.gz")
    profile.add_argument("--split", help="JSON file listing case ids per subset, e.g. {\"train\": [...], "
                                         "\"validation\": [...]} (default: every case in --data)")
    profile.add_argument("--subset", default="train", help="which list of --split to use (default: train)")
    profile.add_argument("--no-uncertainty", action="store_true",
                         help="skip measuring the network's mirror disagreement (no network run; default: measure it)")
    profile.add_argument("--device", default="auto", help="device for the network (default: auto)")
    profile.set_defaults(func=run_profile)


def run_init(args: argparse.Namespace) -> int:
    from ..network.package import init_model_package

    check_output_folder(args.out)
    config = ModelConfig()
    if Path(args.out).exists() and not args.force:
        raise InputError(f"{args.out} already exists: choose another --out, or pass --force to replace it")
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"Configuration file not found: {path}")
        config = read_config(path, base=config, require_complete=False, unknown_keys=UnknownKeys.REFUSE)
    out = init_model_package(args.out, config, seed=args.seed, overwrite=args.force)
    print(f"untrained model package written: {out}")
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    summary = read_package_summary(args.path)
    config = summary.config
    if args.json:
        print(json.dumps(config.to_dict(), indent=2))
        return EXIT_OK
    print(f"model: {config.name} {config.version} ({'trained' if config.trained else 'UNTRAINED'})")
    print(f"path: {summary.path}")
    stored = read_config_json(summary.path)[0].get("weights_sha256")
    verdict = ("matches config.json" if stored == summary.sha256 else
               "config.json stores none: `segqc model convert` adds it" if stored is None else
               "DIFFERS from the sha256 in config.json: the package will not load")
    print(f"weights: {summary.weights.name}, sha256: {summary.sha256} ({verdict})")
    if summary.parameters is not None:
        print(f"parameters: {summary.parameters:,} in {summary.tensors} tensors")
    if args.flops:
        from ..network.package import load_model_package
        from ..network.qcresunet import count_conv_macs

        package = load_model_package(args.path)
        macs = count_conv_macs(package.model, config.patch_size_zyx)
        print(f"{2 * macs / 1e9:.2f} GFLOPs per {'x'.join(map(str, config.patch_size_zyx))} patch")
    domain = read_domain_profile(Path(args.path))
    print(f"domain profile: {domain.cases} training cases ({domain.source})" if domain is not None else
          f"domain profile: none (no {DOMAIN_FILE}: runs cannot tell inputs unlike the training data; add one with "
          "segqc model profile)")
    print("config:")
    print(json.dumps(config.to_dict(), indent=2))
    if summary.card:
        print("model card:")
        print(summary.card.rstrip())
    else:
        print("model card: none")
    return EXIT_OK


def run_convert(args: argparse.Namespace) -> int:
    from ..network.package import convert_weights_to_safetensors, load_model_package

    weights = convert_weights_to_safetensors(args.path)
    package = load_model_package(args.path)
    print(f"weights: {weights} (sha256 {package.sha256})")
    return EXIT_OK


def run_profile(args: argparse.Namespace) -> int:
    from ..network.profile_dataset import profile_package

    profile = profile_package(args.path, args.data, args.split, args.subset, calibrate=not args.no_uncertainty,
                              device=args.device)
    print(f"domain profile written: {Path(args.path) / DOMAIN_FILE} ({profile.cases} cases: {profile.source})")
    return EXIT_OK
