"""The fixture does not build the same model in every process.

When the golden and the live model disagree while neither the project code nor the environment
changed since the golden was made, the difference is in the model's *state*: the live model the
user's fixture built today is not the model the golden was made from. The state diff names the
paths that differ; this diagnosis says what that means and how to make the build reproducible,
instead of only "accept it with regen" (which would fail again on the next run).
"""

from __future__ import annotations

from ..fixes import listed, rebuild_reproducibly
from ..statediff import StateDiff


def _hints(paths: list[str]) -> list[str]:
    """Which part of the build to look at first, from what the differing paths hold."""
    hints = []
    lowered = [p.lower() for p in paths]
    if any("token" in p or "vocab" in p or "processor" in p for p in lowered):
        hints.append(
            "a tokenizer differs: tokenizer training is not reproducible across processes "
            "(WordPiece/BPE number tied tokens in a per-process hash order); load it from a "
            "committed file instead"
        )
    if any(p.endswith(("weight", "bias")) or "weight" in p for p in lowered):
        hints.append(
            "weights differ: unseeded random initialisation, or another seed than the golden's"
        )
    return hints


def explain_state_difference(
    diff: StateDiff, drift_clean: bool, nodeid: str | None
) -> tuple[list[str], str] | None:
    """Detail lines and the fix when outputs differ because the fixture built another model
    (None when code or environment changed, or no path of the state differs)."""
    if not drift_clean or not diff.differing:
        return None
    detail = [
        "no code drift and no environment drift since the golden was made, but the model's state "
        f"differs ({listed(diff.paths, 3)}): the fixture does not build the same model in every "
        "process (or was changed to build another one)",
        *_hints(diff.paths),
    ]
    return detail, rebuild_reproducibly(nodeid)
