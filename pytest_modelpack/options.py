"""Option names, defaults and validation: one place for every knob a user can turn.

Command-line flags, ini options (``[tool.pytest.ini_options]``) and ``@pytest.mark.modelpack(...)``
arguments all end up in a :class:`Settings`. Bad values raise :class:`ValueError` with the accepted
values; the pytest adapter turns that into ``pytest.UsageError``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .states import Mode

# Command-line flags (one group, one prefix).
FLAG_GOLDEN = "--modelpack-golden"
FLAG_REGEN = "--modelpack-regen"
FLAG_DEVICE = "--modelpack-device"
FLAG_REPORT = "--modelpack-report"
FLAG_HTML = "--modelpack-html"
FLAG_TRUST_CODE = "--modelpack-trust-golden-code"

# ini options.
INI_DIR = "modelpack_dir"
INI_DEVICES = "modelpack_devices"
INI_SAFE_GLOBALS = "modelpack_safe_globals"
INI_BY_VALUE = "modelpack_by_value"


DRIFT_POLICIES = ("fail", "warn")
#: What a full gate run does with golden folders no check claimed.
UNUSED_POLICIES = ("fail", "warn", "ignore")
KNOWN_DEVICES = "cpu, cuda, cuda:N, mps"
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|mps)$")

INI_HELP: dict[str, tuple[str, str]] = {
    INI_DIR: ("folder for goldens, relative to each test module (default: goldens)", "goldens"),
    INI_DEVICES: ("devices the modelpack fixture runs on (default: cpu cuda)", "cpu cuda"),
    "modelpack_examples": ("Hypothesis examples per check (default: 30)", "30"),
    "modelpack_recorded": ("examples recorded into examples.json at regen (default: 16)", "16"),
    "modelpack_rtol": ("relative tolerance for golden comparisons (default: per dtype)", ""),
    "modelpack_atol": ("absolute tolerance for golden comparisons (default: per dtype)", ""),
    "modelpack_device_rtol": (
        "relative tolerance across devices, e.g. CUDA vs CPU (default: 1e-3)",
        "",
    ),
    "modelpack_device_atol": (
        "absolute tolerance across devices, e.g. CUDA vs CPU (default: 1e-3)",
        "",
    ),
    INI_SAFE_GLOBALS: ("extra module.qualname globals a golden may reference", ""),
    "modelpack_drift": ("what code drift does: fail or warn (default: fail)", "fail"),
    "modelpack_unused": (
        "what a full --modelpack-golden run does with golden folders no check claimed: "
        "fail, warn or ignore (default: fail)",
        "fail",
    ),
    "modelpack_serializer": (
        "what goldens are written with: pickle, torch, dill or cloudpickle (default: pickle)",
        "pickle",
    ),
    INI_BY_VALUE: (
        "cloudpickle: modules (packages) pickled by value, so their code is pinned in the golden",
        "",
    ),
}

#: cuDNN GRUs may run in TF32 on Ampere and newer GPUs: float32 results then differ from the CPU
#: by up to ~1e-3 relative, far above torch.testing's float32 defaults.
DEFAULT_DEVICE_RTOL = 1e-3
DEFAULT_DEVICE_ATOL = 1e-3

MARKER_KEYS = tuple(
    "devices examples recorded rtol atol device_rtol device_atol drift dir serializer".split()
)


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: Mode = Mode.ROUNDTRIP
    golden_dir: str = "goldens"
    devices: tuple[str, ...] = ("cpu", "cuda")
    examples: int = 30
    recorded: int = 16
    rtol: float | None = None
    atol: float | None = None
    device_rtol: float = DEFAULT_DEVICE_RTOL
    device_atol: float = DEFAULT_DEVICE_ATOL
    safe_globals: tuple[str, ...] = ()
    drift: str = "fail"
    unused: str = "fail"
    serializer: str = "pickle"
    by_value: tuple[str, ...] = ()
    trust_golden_code: bool = False

    def override(self, values: Mapping[str, Any], where: str) -> Settings:
        """Apply marker (or check()) keyword overrides, validated like ini values."""
        unknown = sorted(set(values) - set(MARKER_KEYS))
        if unknown:
            raise ValueError(
                f"{where}: unknown modelpack setting(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(MARKER_KEYS)}"
            )
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key == "dir":
                changes["golden_dir"] = str(value)
                continue
            parsed = _PARSERS[key](
                value, where if key in ("devices", "drift") else f"{where} {key}"
            )
            # rtol=None asks for the per-dtype default; device tolerances always have a number.
            if parsed is not None or key in ("rtol", "atol"):
                changes[key] = parsed
        return dataclasses.replace(self, **changes)


def parse_devices(value: str | Iterable[str], where: str) -> tuple[str, ...]:
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else list(value)
    devices = tuple(dict.fromkeys(d.strip() for d in items if d and d.strip()))
    bad = [d for d in devices if not _DEVICE_RE.match(d)]
    if bad or not devices:
        raise ValueError(
            f"{where}: unknown device(s) {', '.join(bad) or '(none given)'}; "
            f"accepted: {KNOWN_DEVICES} (comma- or space-separated)"
        )
    return devices


def parse_count(value: Any, where: str, minimum: int = 1) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return number


def parse_tolerance(value: Any, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number >= 0.0:
        raise ValueError(f"{where}: expected a number >= 0 (e.g. 1e-5), got {value!r}")
    return number


def _parse_choice(value: Any, where: str, choices: Iterable[str]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ValueError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return text


def parse_serializer(value: Any, where: str) -> str:
    """One of :data:`~pytest_modelpack.serializers.NAMES`, installed (else the pip line)."""
    from .serializers import NAMES, SerializerMissing, serializer

    text = _parse_choice(value, where, NAMES)
    try:
        serializer(text).module()
    except SerializerMissing as exc:
        raise ValueError(f"{where}: {exc}") from None
    return text


#: Setting (marker key, ini name without ``modelpack_``) -> its parser ``(value, where)``.
_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "devices": parse_devices,
    "examples": parse_count,
    "recorded": parse_count,
    "rtol": parse_tolerance,
    "atol": parse_tolerance,
    "device_rtol": parse_tolerance,
    "device_atol": parse_tolerance,
    "drift": lambda value, where: _parse_choice(value, where, DRIFT_POLICIES),
    "unused": lambda value, where: _parse_choice(value, where, UNUSED_POLICIES),
    "serializer": parse_serializer,
}


def settings_from_ini(
    ini: Mapping[str, Any], mode: Mode, device_flag: str | None, trust_golden_code: bool = False
) -> Settings:
    """Build the session's :class:`Settings` from ini values (strings / line lists)."""

    def text(name: str) -> str:
        raw = ini.get(name)
        if raw is None:
            return INI_HELP[name][1]
        if isinstance(raw, (list, tuple)):
            return " ".join(str(r) for r in raw)
        return str(raw)

    def listed(name: str) -> list[str]:
        raw = ini.get(name) or ()
        lines = [raw] if isinstance(raw, str) else raw
        return [word for line in lines for word in str(line).split()]  # names hold no spaces

    changes: dict[str, Any] = {}
    for name in INI_HELP:
        key = name.removeprefix("modelpack_")
        if key in _PARSERS:
            flag = key == "devices" and device_flag
            parsed = _PARSERS[key](flag or text(name), FLAG_DEVICE if flag else name)
            if parsed is not None:  # an empty tolerance keeps the default
                changes[key] = parsed
    return Settings(
        mode=mode,
        golden_dir=text(INI_DIR).strip() or "goldens",
        safe_globals=tuple(listed(INI_SAFE_GLOBALS)),
        by_value=tuple(listed(INI_BY_VALUE)),
        trust_golden_code=trust_golden_code,
        **changes,
    )
