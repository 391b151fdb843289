"""``segqc model init|info|convert``: write an untrained model package, show a package's config and card,
convert an older package's ``weights.pt`` to ``weights.safetensors``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..files import check_output_folder
from ..network.config import ModelConfig, read_config
from ..network.package import (
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    convert_weights_to_safetensors,
    init_model_package,
    load_model_package,
)
from ..network.qcresunet import count_conv_macs, count_parameters

EXIT_OK = 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("model", help="create or inspect QC model packages",
                                   description="Create an untrained model package or inspect one.")
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="write an untrained (randomly initialised) model package",
        description="Write config.json, weights.safetensors (random, seeded) and MODEL_CARD.md; training starts "
                    "from it. "
                    "--config gives a JSON object whose keys override the default configuration.")
    init.add_argument("--out", required=True, help="package folder to create")
    init.add_argument("--config", help="JSON file with ModelConfig fields overriding the defaults")
    init.add_argument("--seed", type=int, default=0, help="random seed of the initial weights")
    init.add_argument("--force", action="store_true", help="replace an existing package folder")
    init.set_defaults(func=run_init)
    info = actions.add_parser("info", help="print a package's configuration and model card")
    info.add_argument("path", help="model package folder")
    info.add_argument("--json", action="store_true", help="print only the configuration as JSON")
    info.set_defaults(func=run_info)
    convert = actions.add_parser(
        "convert", help=f"rewrite an older package's {LEGACY_WEIGHTS_FILE} as {WEIGHTS_FILE} (same tensors)",
        description=f"Rewrite {LEGACY_WEIGHTS_FILE} (a torch pickle) as {WEIGHTS_FILE} in place: the same tensors "
                    "and dtypes; config.json gets the new file's sha256 (a package without one gets it too), the "
                    "card is untouched. Safe to run again after an interruption.")
    convert.add_argument("path", help="model package folder")
    convert.set_defaults(func=run_convert)


def run_init(args: argparse.Namespace) -> int:
    check_output_folder(args.out)
    config = ModelConfig()
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError(f"Configuration file not found: {path}")
        config = read_config(path, base=config, require_complete=False)
    out = init_model_package(args.out, config, seed=args.seed, overwrite=args.force)
    print(f"untrained model package written: {out}")
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    package = load_model_package(args.path)
    if args.json:
        print(json.dumps(package.config.to_dict(), indent=2))
        return EXIT_OK
    config = package.config
    macs = count_conv_macs(package.model, config.patch_size_zyx)
    print(f"model: {config.name} {config.version} ({'trained' if config.trained else 'UNTRAINED'})")
    print(f"path: {package.path}")
    print(f"weights sha256: {package.sha256} " + ("(matches config.json)" if package.sha256_checked else
                                                   "(config.json stores none: `segqc model convert` adds it)"))
    print(f"parameters: {count_parameters(package.model):,}; {2 * macs / 1e9:.2f} GFLOPs per "
          f"{'x'.join(map(str, config.patch_size_zyx))} patch")
    print("config:")
    print(json.dumps(config.to_dict(), indent=2))
    if package.card:
        print("model card:")
        print(package.card.rstrip())
    else:
        print("model card: none")
    return EXIT_OK


def run_convert(args: argparse.Namespace) -> int:
    weights = convert_weights_to_safetensors(args.path)
    package = load_model_package(args.path)
    print(f"weights: {weights} (sha256 {package.sha256})")
    return EXIT_OK
