"""The ``modelpack`` command line: inspect, scan and diff goldens without unpickling them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import errors

EXIT_OK, EXIT_UNSAFE, EXIT_UNREADABLE = 0, 1, 2


def _folder(arg: str) -> Path:
    path = Path(arg)
    return path.parent if path.is_file() else path


def _load_golden(arg: str) -> tuple[Any, dict[str, Any]]:
    from .golden import GoldenStore

    folder = _folder(arg)
    store = GoldenStore(folder, folder.name)
    return store, store.read_manifest()


def cmd_inspect(args: argparse.Namespace) -> int:
    from .allowlist import Allowlist
    from .report import format_size

    try:
        store, manifest = _load_golden(args.golden)
    except errors.ModelpackError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_UNREADABLE
    out = print
    bundle = manifest["bundle"]
    out(f"golden: {manifest.get('name')}  ({store.folder})")
    out(f"format version: {manifest.get('format_version')}")
    try:
        store.verify(manifest)
        integrity = "sha256 verified"
    except errors.ModelpackError as exc:
        integrity = f"CORRUPT: {exc.summary}"
    out(
        f"bundle: {format_size(bundle.get('size'))}, protocol {bundle.get('protocol')}, "
        f"sha256 {bundle.get('sha256')} ({integrity})"
    )
    created = manifest.get("created_by") or {}
    out(f"created by: {created.get('test')} on {created.get('device')}")
    env = manifest.get("environment") or {}
    out("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    allowlist = Allowlist(Path(args.root).resolve(), args.allow)
    out("globals:")
    for entry in manifest.get("globals") or []:
        module, qualname = entry.get("module"), entry.get("qualname")
        if not (isinstance(module, str) and isinstance(qualname, str)):
            module, _, qualname = str(entry.get("global")).rpartition(".")
        decision = allowlist.check(module, qualname)
        verdict = "safe" if decision.allowed else f"REFUSED ({decision.reason})"
        out(f"  {module}.{qualname}  [{entry.get('kind')}]  {verdict}")
    code = manifest.get("code") or {}
    if code:
        out("project code:")
        for name, unit in code.items():
            out(
                f"  {name}  ({unit.get('file')}:{unit.get('line')})  {str(unit.get('sha256'))[:12]}"
            )
    out(f"examples: {manifest['examples'].get('count', '?')} recorded")
    out("structure:")
    for path, line in (manifest.get("structure") or {}).items():
        out(f"  {path}: {line}")
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    from .allowlist import Allowlist
    from .scan import scan_file

    allowlist = Allowlist(Path(args.root).resolve(), args.allow)
    unsafe = unreadable = False
    for name in args.files:
        path = Path(name)
        if path.is_dir():
            path = path / "bundle.pkl"
        if not path.is_file():
            print(f"{name}: unreadable: no such file")
            unreadable = True
            continue
        verdict = scan_file(path, allowlist)
        if verdict.error:
            print(f"{path}: unreadable: {verdict.error}")
            unreadable = True
        elif verdict.refused:
            print(f"{path}: UNSAFE — {len(verdict.refused)} global(s) not on the allowlist")
            for ref, reason in verdict.refused:
                print(f"  {ref.module}.{ref.qualname}  ({ref.where}): {reason}")
            unsafe = True
        else:
            print(f"{path}: safe ({len(verdict.globals)} global(s), all allowed)")
    return EXIT_UNSAFE if unsafe else EXIT_UNREADABLE if unreadable else EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from .drift import describe_code_change, env_changes
    from .structure import diff_trees

    try:
        store_a, a = _load_golden(args.golden_a)
        store_b, b = _load_golden(args.golden_b)
    except errors.ModelpackError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_UNREADABLE
    differences = 0
    if a["bundle"].get("sha256") != b["bundle"].get("sha256"):
        print(
            f"bundle: {a['bundle'].get('size')} -> {b['bundle'].get('size')} bytes "
            "(bytes differ; goldens are compared by behaviour, see examples below)"
        )
    env = env_changes(a.get("environment") or {}, b.get("environment") or {})
    for line in env:
        print(f"environment: {line}")
    code = describe_code_change(a.get("code") or {}, b.get("code") or {})
    for name in code:
        print(f"code changed: {name}")
    ga = {e.get("global") for e in a.get("globals") or []}
    gb = {e.get("global") for e in b.get("globals") or []}
    for name in sorted(ga - gb):
        print(f"global removed: {name}")
    for name in sorted(gb - ga):
        print(f"global added: {name}")
    structure = diff_trees(a.get("structure") or {}, b.get("structure") or {})
    for line in structure:
        print(f"structure {line}")
    examples = _diff_examples(store_a, store_b)
    for line in examples:
        print(line)
    differences = len(env) + len(code) + len(ga ^ gb) + len(structure) + len(examples)
    if not differences:
        print("no differences in environment, code, globals, structure or examples")
    return EXIT_OK if not differences else EXIT_UNSAFE


def _diff_examples(store_a: Any, store_b: Any) -> list[str]:
    from .codec import encode_value
    from .compare import compare, describe_differences

    try:
        ea, eb = store_a.read_examples(), store_b.read_examples()
    except errors.ModelpackError as exc:
        return [f"examples: cannot compare ({exc.summary})"]
    inputs_a = [json.dumps(encode_value(e.input), sort_keys=True) for e in ea]
    inputs_b = [json.dumps(encode_value(e.input), sort_keys=True) for e in eb]
    if inputs_a != inputs_b:
        return [f"examples: recorded inputs differ ({len(ea)} vs {len(eb)} examples)"]
    lines = []
    for index, (x, y) in enumerate(zip(ea, eb)):
        diffs = compare(x.output, y.output, exact=True)
        if diffs:
            lines.append(f"example #{index} (input {x.input!r:.60}):")
            lines.extend("  " + d for d in describe_differences(diffs, limit=3))
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpack",
        description="Inspect, scan and diff pytest-modelpack goldens. Never unpickles anything.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--root", default=".", help="project root: its modules count as project code"
        )
        p.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="MODULE.QUALNAME",
            help="also allow this global (repeatable)",
        )

    p = sub.add_parser("inspect", help="manifest, structure tree, globals with safety verdicts")
    p.add_argument("golden", help="golden folder (or its manifest.json)")
    common(p)
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("scan", help="safety verdict for pickles and torch files (exit 1 if unsafe)")
    p.add_argument("files", nargs="+", metavar="FILE")
    common(p)
    p.set_defaults(func=cmd_scan)
    p = sub.add_parser("diff", help="what differs between two goldens")
    p.add_argument("golden_a")
    p.add_argument("golden_b")
    p.set_defaults(func=cmd_diff)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
