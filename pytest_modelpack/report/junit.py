"""JUnit XML properties: what CI test views show for each modelpack check.

With ``--junitxml``, pytest writes ``item.user_properties`` as ``<property>`` elements of the test
case; under pytest-xdist they travel with the test report to the controller, which writes the file.
"""

from __future__ import annotations

from typing import Any

PREFIX = "modelpack."


def junit_properties(row: dict[str, Any], golden_path: str) -> list[tuple[str, str]]:
    """The ``modelpack.*`` properties of one report row (one check of one golden on one device)."""
    props = [
        ("golden", row["name"]),
        ("golden_path", golden_path),
        ("device", row["device"]),
        ("mode", str(row["mode"])),
        ("verdict", str(row["verdict"])),
    ]
    if row.get("kind"):
        props.append(("kind", row["kind"]))
    size = row.get("bundle_size")
    props += [
        ("bundle_size", "" if size is None else str(size)),
        ("examples", str(row.get("examples") or 0)),
        ("seconds", f"{row.get('seconds', 0.0):.3f}"),
    ]
    return [(PREFIX + key, value) for key, value in props]
