"""Give an existing model package a domain profile from a labelled dataset folder (``segqc model profile``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError
from ..io.case import load_case
from ..io.datasets import CaseFiles, list_nnunet_cases
from .domain import DomainCase, DomainProfile, build_domain_profile, write_domain_profile

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def select_cases(data_dir: PathLike, split_file: Optional[PathLike] = None, subset: str = "train") -> list[CaseFiles]:
    """The labelled cases of an nnU-Net raw folder (``imagesTr/``, ``labelsTr/``), restricted to the ids listed
    under ``subset`` in ``split_file`` (a JSON object such as ``{"train": [...], "validation": [...]}``)."""
    cases = list_nnunet_cases(data_dir)
    if split_file is None:
        return cases
    path = Path(split_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"Split file not found: {path}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"Split file {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get(subset), list):
        keys = sorted(data) if isinstance(data, dict) else []
        raise InputError(f"Split file {path} has no list of case ids named {subset!r} (it has {keys})")
    wanted = [str(case_id) for case_id in data[subset]]
    by_id = {case.case_id: case for case in cases}
    missing = [case_id for case_id in wanted if case_id not in by_id]
    if missing:
        raise InputError(f"{len(missing)} case(s) of {subset!r} in {path} are not in {data_dir} (e.g. "
                         f"{', '.join(missing[:3])})")
    return [by_id[case_id] for case_id in wanted]


def read_cases(cases: Sequence[CaseFiles]) -> Iterator[DomainCase]:
    """Read one case at a time (memory stays flat over thousands of cases)."""
    for case in cases:
        loaded = load_case(case.images, case.label)
        yield DomainCase([image.array for image in loaded.images], loaded.segmentation.array, loaded.geometry)


def profile_package(package_dir: PathLike, data_dir: PathLike, split_file: Optional[PathLike] = None,
                    subset: str = "train", calibrate: bool = True, device: str = "auto") -> DomainProfile:
    """Build the domain profile of the package's model from ``data_dir`` (optionally one subset of a split),
    measure the network's mirror disagreement on the same cases (``calibrate``), and write ``domain.json``."""
    from .calibration import calibrate_uncertainty  # torch: only here
    from .inference import select_device
    from .package import check_profile_matches, load_model_package

    package = load_model_package(package_dir)
    cases = select_cases(data_dir, split_file, subset)
    source = f"{Path(data_dir).name}: {len(cases)} cases" + (f" ({subset!r} of {Path(split_file).name})"
                                                              if split_file else "")
    logger.info("Profiling %s on %s", package.config.name, source)
    profile = build_domain_profile(read_cases(cases), package.config, source)
    if calibrate:
        torch_device = select_device(device)
        package.model.to(torch_device)
        profile.uncertainty = calibrate_uncertainty(package.model, package.config, read_cases(cases), torch_device,
                                                    source)
    check_profile_matches(profile, package.config, package.path)
    write_domain_profile(package.path, profile)
    return profile
