"""The types and sane ranges of every ``config.json`` field, checked before anything is built from it.

A model configuration is data from a file: ``"48"`` where a list of numbers belongs must be refused in
our words (not read as ``[4, 8]``), and a size that makes the network or its input absurdly large
(widths of 32768, a million residual blocks, a patch of 2000³, 100 000 classes, a target spacing of
0.001 mm, a crop margin of -1e9 mm) must be refused before a gigabyte is allocated or an hour is spent.
The ranges are generous: the published QCResUNet (widths 32-256, 3/4/6/3 blocks, patch 160×192×160)
sits well inside every one of them.  :func:`coerce_config_values` returns the values converted to the
types :class:`~SegQCLib.network.config.ModelConfig` holds, or raises ModelError listing every problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional

from ..errors import ModelError

MAX_STAGES = 8
MAX_WIDTH = 1024
MAX_BLOCKS_PER_STAGE = 16
MAX_DECODER_CONVS = 8
MAX_FULL_RES_WIDTH = 256
MAX_CASE_HEAD_HIDDEN = 4096
MAX_ECA_KERNEL = 15
MAX_STRIDE = 4
MIN_PATCH = 4
MAX_PATCH = 512
MAX_PATCH_VOXELS = 256 ** 3
MAX_CLASSES = 255
MAX_LABEL = 32767
MAX_MODALITIES = 16
SPACING_RANGE_MM = (0.05, 50.0)
MAX_CROP_MARGIN_MM = 1000.0
MAX_WINDOW_OVERLAP = 0.9
MAX_NSD_TOLERANCE_MM = 100.0
MAX_TEXT = 10_000

Check = Callable[[Any, str], Any]


class _Problem(Exception):
    pass


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__, type(value).__name__)


def whole_number(low: int, high: int) -> Check:
    def check(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Problem(f"{name} must be a whole number, got {_type_name(value)}")
        if not math.isfinite(value) or value != int(value):
            raise _Problem(f"{name} must be a whole number, got {value!r}")
        if not low <= value <= high:
            raise _Problem(f"{name} must be between {low} and {high}, got {int(value)}")
        return int(value)

    return check


def number(low: float, high: float, high_open: bool = False, low_open: bool = False) -> Check:
    def check(value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Problem(f"{name} must be a number, got {_type_name(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise _Problem(f"{name} must be a finite number, got {value!r}")
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise _Problem(f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
                           f"got {value:g}")
        return value

    return check


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"{name} must be true or false, got {_type_name(value)}")
    return value


def text(max_length: int = MAX_TEXT) -> Check:
    def check(value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise _Problem(f"{name} must be text, got {_type_name(value)}")
        if len(value) > max_length:
            raise _Problem(f"{name} is {len(value)} characters long; at most {max_length} are allowed")
        return value

    return check


def listing(item: Check, min_length: int, max_length: int, exact: Optional[int] = None) -> Check:
    def check(value: Any, name: str) -> list:
        if not isinstance(value, list):
            raise _Problem(f"{name} must be a list, got {_type_name(value)}")
        if exact is not None and len(value) != exact:
            raise _Problem(f"{name} must have {exact} values, got {len(value)}")
        if not min_length <= len(value) <= max_length:
            raise _Problem(f"{name} must have {min_length} to {max_length} values, got {len(value)}")
        return [item(v, f"{name}[{i}]") for i, v in enumerate(value)]

    return check


def mapping(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise _Problem(f"{name} must be an object, got {_type_name(value)}")
    return dict(value)


def classes(value: Any, name: str) -> dict[int, str]:
    if not isinstance(value, dict):
        raise _Problem(f"{name} must be an object mapping labels to names, e.g. {{\"1\": \"liver\"}}, got "
                       f"{_type_name(value)}")
    if not 1 <= len(value) <= MAX_CLASSES:
        raise _Problem(f"{name} must name 1 to {MAX_CLASSES} classes, got {len(value)}")
    result = {}
    for key, class_name in value.items():
        try:
            label = int(str(key).strip())
        except ValueError:
            raise _Problem(f"{name}: {key!r} is not a label number") from None
        if not 1 <= label <= MAX_LABEL:
            raise _Problem(f"{name}: label {label} must be between 1 and {MAX_LABEL} (0 is the background)")
        result[label] = text(200)(class_name, f"{name}[{key!r}]")
    return result


def optional(check: Check) -> Check:
    return lambda value, name: None if value is None else check(value, name)


def percentiles(value: Any, name: str) -> list[float]:
    low, high = listing(number(0.0, 100.0), 2, 2)(value, name)
    if low >= high:
        raise _Problem(f"{name} must be two percentiles, lower first, got {[low, high]}")
    return [low, high]


def odd_kernel(value: Any, name: str) -> int:
    size = whole_number(1, MAX_ECA_KERNEL)(value, name)
    if size % 2 == 0:
        raise _Problem(f"{name} must be odd, got {size}")
    return size


def full_res_kernel(value: Any, name: str) -> int:
    size = whole_number(1, 3)(value, name)
    if size not in (1, 3):
        raise _Problem(f"{name} must be 1 or 3, got {size}")
    return size


FIELD_CHECKS: dict[str, Check] = {
    "name": text(200),
    "version": text(100),
    "classes": classes,
    "modalities": listing(text(100), 1, MAX_MODALITIES),
    "include_background_channel": flag,
    "widths": listing(whole_number(1, MAX_WIDTH), 2, MAX_STAGES),
    "blocks_per_stage": listing(whole_number(1, MAX_BLOCKS_PER_STAGE), 2, MAX_STAGES),
    "strides": listing(listing(whole_number(1, MAX_STRIDE), 3, 3, exact=3), 2, MAX_STAGES),
    "decoder_from_stage": whole_number(0, MAX_STAGES - 1),
    "decoder_convs": whole_number(1, MAX_DECODER_CONVS),
    "full_res_width": whole_number(1, MAX_FULL_RES_WIDTH),
    "full_res_kernel": full_res_kernel,
    "eca_kernel_size": odd_kernel,
    "dropout": number(0.0, 1.0, high_open=True),
    "case_head_hidden": whole_number(1, MAX_CASE_HEAD_HIDDEN),
    "predict_nsd": flag,
    "report_case_head": flag,
    "output": text(100),
    "truth_temperature": number(0.05, 20.0),
    "tta_flips": listing(listing(whole_number(0, 2), 1, 3), 0, 7),
    "nsd_tolerance_mm": number(0.0, MAX_NSD_TOLERANCE_MM, low_open=True),
    "patch_size_zyx": listing(whole_number(MIN_PATCH, MAX_PATCH), 3, 3, exact=3),
    "target_spacing_zyx_mm": optional(listing(number(*SPACING_RANGE_MM), 3, 3, exact=3)),
    "normalization": text(100),
    "clip_percentiles": percentiles,
    "crop_margin_mm": number(0.0, MAX_CROP_MARGIN_MM),
    "window_overlap": number(0.0, MAX_WINDOW_OVERLAP),
    "trained": flag,
    "training_data": text(),
    "license": text(),
    "validation_metrics": mapping,
    "extra": mapping,
}


def coerce_config_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every known field checked and converted; ModelError listing all problems otherwise."""
    result, problems = dict(values), []
    for key, check in FIELD_CHECKS.items():
        if key not in values:
            continue
        try:
            result[key] = check(values[key], key)
        except _Problem as problem:
            problems.append(str(problem))
    if not problems and "patch_size_zyx" in result and math.prod(result["patch_size_zyx"]) > MAX_PATCH_VOXELS:
        problems.append(f"patch_size_zyx {result['patch_size_zyx']} holds {math.prod(result['patch_size_zyx']):,} "
                        f"voxels; at most {MAX_PATCH_VOXELS:,} (256³) are allowed")
    if problems:
        raise ModelError("Invalid model configuration: " + "; ".join(problems))
    return result
