"""The ``modelpack`` command line: inspect, scan and diff goldens without unpickling them.

Everything here reads goldens as untrusted input: pickles are only ever scanned statically
(:mod:`pytest_modelpack.safety`), manifests and examples are JSON, and text taken from them is
printed with control characters escaped so a crafted manifest cannot drive the terminal.

Exit codes (the same for every command, documented in ``--help``):

* ``0`` — safe (scan, inspect), no differences (diff);
* ``1`` — unsafe: a global not on the allowlist (scan, inspect), or the goldens differ (diff);
* ``2`` — unreadable: a missing, empty, truncated or corrupt file, a Git LFS pointer, not a pickle;
  also bad command-line usage.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import errors
from .fixes import regen_command
from .golden.probe import Problem, file_problem, listing_problem, not_a_bundle, unreadable_why
from .project import is_library_module

if TYPE_CHECKING:
    from .golden.manifest import Manifest

EXIT_OK = 0
EXIT_UNSAFE = 1
EXIT_DIFFERENT = 1
EXIT_UNREADABLE = 2

_EXIT_CODES = """\
exit codes:
  0  {ok}
  1  {one}
  2  unreadable: missing, empty, truncated or corrupt file, Git LFS pointer,
     not a pickle; or bad usage"""

_SCAN_EPILOG = (
    "FILE is never unpickled: its opcodes are walked statically, including pickles nested in\n"
    "torch storages (torch.storage._load_from_bytes) and torch zip files. A global is safe when\n"
    "it is on the built-in allowlist (torch rebuild functions, torch.nn modules, containers,\n"
    "numpy arrays, sentencepiece), is a class or function defined in the project under --root\n"
    "(only the project's own modules are imported, to confirm that), or is given with --allow.\n\n"
    + _EXIT_CODES.format(ok="every file is safe", one="at least one file is unsafe (wins over 2)")
)
_INSPECT_EPILOG = (
    "The globals are those of bundle.pkl itself (scanned statically, never unpickled), not the\n"
    "list the manifest claims; a difference between the two is reported.\n\n"
    + _EXIT_CODES.format(ok="the golden is intact and safe", one="the golden is unsafe")
)
_DIFF_EPILOG = (
    "Compares the manifests (environment, project code, globals, structure tree) and the\n"
    "recorded examples (outputs for the same inputs, exactly). Never unpickles either bundle.\n\n"
    + _EXIT_CODES.format(ok="no differences", one="the goldens differ")
)


# -- helpers -----------------------------------------------------------------------------------


def _printable(value: object) -> str:
    """``str(value)`` with control characters escaped: text from a golden is untrusted."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _out(*parts: object) -> None:
    print("".join(_printable(p) for p in parts))


#: The files of a golden folder: naming one of them names its golden.
_GOLDEN_FILES = ("bundle.pkl", "bundle.pt", "manifest.json", "examples.json")


def _bundle_in(folder: Path) -> Path:
    """A golden folder's bundle, as the store finds it (bundle.pt where it holds only that)."""
    from .golden import GoldenStore

    return GoldenStore(folder, folder.name).bundle_path


def _bundles_in(folder: Path) -> list[Path]:
    """Every bundle a golden folder holds (a bundle.pkl beside a bundle.pt is scanned too: the
    scan must not vouch for one file while the gate loads the other), or the one it lacks."""
    found = [folder / name for name in _GOLDEN_FILES[:2] if os.path.lexists(folder / name)]
    return found or [_bundle_in(folder)]


def _folder(arg: str) -> Path:
    path = Path(arg)
    return path.parent if path.name in _GOLDEN_FILES and not path.is_dir() else path


def _load_golden(arg: str) -> tuple[Any, Manifest]:
    """The golden at ``arg`` and its validated manifest. A typo, or a file that is not part of a
    golden, is "no golden at PATH": never a corrupt golden to remove or to "git checkout -- ."
    the folder around it."""
    from .golden import GoldenStore

    folder = _folder(arg)
    store = GoldenStore(folder, folder.name)
    # What cannot be read (EACCES, ELOOP, EIO ...), a symlink to nothing, a file in the way of
    # a folder: each is said as what it is, never as "no golden" (an ENOENT is).
    exists = store.lexists(folder)
    if not exists and (blocked := store.blocked()) is not None:
        raise blocked
    store.check_paths()  # a symlink to nothing in place of the folder
    if not exists or not store.is_dir(folder):
        raise errors.MissingGolden(
            f"no golden at {arg}",
            detail=[f"{folder} " + ("is not a folder" if exists else "does not exist")],
            fix="check the path: a golden is a folder holding bundle.pkl, manifest.json and "
            f"examples.json, written by {regen_command()}",
        )
    return store, store.read_manifest()


@contextlib.contextmanager
def _project_importable(root: Path | None) -> Iterator[None]:
    """Put the project root first on ``sys.path`` while judging globals, as pytest's rootdir is.

    The allowlist trusts classes and functions defined in the project's own modules; it can only
    find them when the project root is importable (``modelpack`` as a console script does not put
    the working directory on ``sys.path``).
    """
    entry = str(root)
    added = root is not None and entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _allowlist(args: argparse.Namespace) -> Any:
    """The allowlist for ``--root`` and ``--allow``.

    No project code is trusted without an explicit ``--root``: checking a project class imports
    its module, and the file being scanned must not be able to pick which folder's code runs
    (a downloaded model folder can hold Python files next to the pickle).
    """
    from .safety import Allowlist

    root = None if args.root is None else Path(args.root).resolve()
    if root is not None and not root.is_dir():
        raise errors.UsageError(
            f"--root {args.root}: not a directory", fix="pass the project's root folder"
        )
    return Allowlist(root, args.allow)


class _Trusted:
    """Per golden, the allowlist with what the trust file beside its golden folder lists for it
    (``goldens.trust``, written by regen: the live model's own uses, reviewable in the diff)."""

    def __init__(self, args: argparse.Namespace, base: Any) -> None:
        self.allow, self.base = args.allow, base
        self.files: dict[Path, dict[str, list[str]]] = {}
        self.made: dict[Path, Any] = {}

    def for_bundle(self, bundle: Path) -> Any:
        from .golden import trustfile
        from .safety import Allowlist

        try:
            folder = bundle.resolve().parent
        except (OSError, RuntimeError):  # a symlink loop: the trust file beside where it is
            folder = Path(os.path.abspath(bundle)).parent
        if folder.parent not in self.files:
            self.files[folder.parent] = trustfile.read(folder.parent)
        lines = self.files[folder.parent].get(folder.name)
        if not lines:
            return self.base
        if folder not in self.made:
            trust = trustfile.trust_of(lines)
            self.made[folder] = Allowlist(self.base.project_root, self.allow, trust=trust)
        return self.made[folder]


def _root_hint(allowlist: Any, refused: list[tuple[Any, str]]) -> str | None:
    """A hint when refused globals look like project code the user did not point us to."""
    project_like = [
        ref
        for ref, _ in refused
        if not ref.problem
        and allowlist.classify(ref.module) != "builtin"
        and not is_library_module(ref.module)
    ]
    if not project_like:
        return None
    if allowlist.project_root is None:
        return (
            "hint: classes and functions of your own project are allowed only with "
            "--root PROJECT_DIR (its modules are imported to check them: pass only a project "
            "you trust)"
        )
    if any(allowlist.check(ref.module, ref.qualname).missing for ref in project_like):
        return (
            "hint: a global that is not found may be project code of another folder than "
            f"--root {allowlist.project_root}"
        )
    return None


# -- inspect -----------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    from .report import format_size
    from .safety import scan_file

    allowlist = _allowlist(args)
    store, manifest = _load_golden(args.golden)  # an error: main() reports it, exit 2
    bundle = manifest.bundle
    corrupt = False
    _out(f"golden: {manifest.name}  ({store.folder})")
    _out(f"format version: {manifest.format_version}")
    try:
        store.verify(manifest)
        store.read_examples()
        integrity = "sha256 verified"
    except errors.ModelpackError as exc:
        label = "CORRUPT" if isinstance(exc, errors.CorruptGolden) else exc.kind
        integrity = f"{label}: {exc.summary}"
        corrupt = True
    _out(
        f"bundle: {format_size(bundle.size)}, "
        f"protocol {bundle.protocol}, sha256 {bundle.sha256} ({integrity})"
    )
    _out(f"created by: {manifest.created_by.test} on {manifest.created_by.device}")
    _out("environment: " + ", ".join(f"{k} {v}" for k, v in manifest.environment.items()))

    allowlist = _Trusted(args, allowlist).for_bundle(store.bundle_path)
    with _project_importable(allowlist.project_root):
        problem = file_problem(store.bundle_path)
        verdict = scan_file(store.bundle_path, allowlist) if problem is None else None
        claimed = _claimed_globals(manifest)
        if problem is not None:
            _out(f"verdict: unreadable — {store.bundle_name}: {problem.why}")
            if problem.fix:
                _out(f"  fix: {problem.fix}")
        else:
            assert verdict is not None
            _out(f"verdict: {_judged(verdict, store.bundle_path)[1]}")
            hint = _stopped_and_hint(verdict, allowlist)
            if hint:
                _out("  " + hint)
            reasons = {(ref.module, ref.qualname): why for ref, why in verdict.refused}
            _out(f"globals (scanned from {store.bundle_name}; nothing unpickled):")
            for ref in verdict.globals:
                key = (ref.module, ref.qualname)
                if key in reasons:
                    kind, state = allowlist.classify(ref.module), f"REFUSED ({reasons[key]})"
                else:
                    kind, state = allowlist.check(ref.module, ref.qualname).kind, "safe"
                where = "" if ref.where == "top level" else f"  in {ref.where}"
                unlisted = "" if key in claimed else "  (not listed in the manifest)"
                _out(f"  {ref.name}  [{kind}]  {state}{where}{unlisted}")
            found = {(ref.module, ref.qualname) for ref in verdict.globals}
            if verdict.error is None:
                for module, qualname in sorted(claimed - found):
                    _out(f"  {module}.{qualname}  listed in the manifest, not in bundle.pkl")
    if manifest.code:
        _out("project code:")
        for name, unit in manifest.code.items():
            digest = str(unit.get("sha256"))[:12]
            _out(f"  {name}  ({unit.get('file')}:{unit.get('line')})  {digest}")
    count = manifest.examples.count
    _out(f"examples: {'?' if count is None else count} recorded")
    _out("structure:")
    for path, line in manifest.structure.items():
        _out(f"  {path}: {line}")
    if verdict is not None and _judged(verdict, store.bundle_path)[0] == "unsafe":
        return EXIT_UNSAFE
    if corrupt or verdict is None or verdict.error is not None:
        return EXIT_UNREADABLE
    return EXIT_OK


def _claimed_globals(manifest: Manifest) -> set[tuple[str, str]]:
    return {(g.module, g.qualname) for g in manifest.globals}


def _judged(verdict: Any, path: Path | None = None) -> tuple[str, str]:
    """safe, unsafe or unreadable, and the line that says it."""
    # Refused globals first: a payload followed by garbage still runs when unpickled, so
    # "unsafe" is the news even when the scan then stopped.
    if verdict.refused and not not_a_bundle(verdict, path):
        return "unsafe", f"UNSAFE — {len(verdict.refused)} global(s) not on the allowlist"
    if verdict.error is not None or verdict.refused:
        return "unreadable", f"unreadable — {unreadable_why(verdict, path)}"
    return "safe", f"safe — {len(verdict.globals)} global(s), all allowed"


def _stopped_and_hint(verdict: Any, allowlist: Any) -> str | None:
    """An unsafe file's "scan then stopped" line, if it stopped; returns its --root hint."""
    if not verdict.refused:
        return None
    if verdict.error is not None:
        _out(f"  (the scan then stopped: {verdict.error})")
    return _root_hint(allowlist, verdict.refused)


# -- scan --------------------------------------------------------------------------------------


def _scan_targets(path: Path) -> list[Path]:
    """What to scan for one argument: a file; a golden folder's bundle(s); or, for a folder of
    goldens (``goldens/``), the bundles of every golden in it. An OSError (a folder that cannot
    be listed) is the caller's to report."""
    if path.name in _GOLDEN_FILES or file_problem(path) is None or not path.is_dir():
        return [path]
    if any(os.path.lexists(path / name) for name in _GOLDEN_FILES):
        return _bundles_in(path)
    found = sorted(
        bundle
        for sub in path.iterdir()
        if sub.is_dir() and not sub.name.startswith(".")
        for bundle in _bundles_in(sub)
        if os.path.lexists(bundle)
    )
    return found or [path / "bundle.pkl"]


def _targets(names: list[str]) -> tuple[list[Path], list[tuple[Path, Problem]]]:
    paths: list[Path] = []
    problems = []
    for name in names:
        try:
            paths += _scan_targets(Path(name))
        except OSError as exc:  # goldens/ without r: its goldens cannot be listed
            path = Path(name)
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            problem = None if is_dir else file_problem(path)
            problems.append((path, problem or listing_problem(exc)))
    return paths, problems


def cmd_scan(args: argparse.Namespace) -> int:
    from .safety import refusal_lines, scan_file

    allowlist = _allowlist(args)
    trusted = _Trusted(args, allowlist)
    counts = {"safe": 0, "unsafe": 0, "unreadable": 0}
    hints: list[str] = []
    paths, problems = _targets(args.files)
    with _project_importable(allowlist.project_root):
        for path, problem in [*problems, *((p, file_problem(p)) for p in paths)]:
            if problem is not None:
                _out(f"{path}: unreadable — {problem.why}")
                if problem.fix:
                    _out(f"  fix: {problem.fix}")
                counts["unreadable"] += 1
                continue
            verdict = scan_file(path, trusted.for_bundle(path))
            judged, text = _judged(verdict, path)
            _out(f"{path}: {text}")
            counts[judged] += 1
            for line in refusal_lines(verdict.refused):
                _out(f"  {line}")
            hint = _stopped_and_hint(verdict, allowlist)
            if hint and hint not in hints:
                hints.append(hint)
    for hint in hints:
        _out(hint)
    if len(paths) + len(problems) > 1:
        _out(
            f"{len(paths) + len(problems)} file(s): "
            + ", ".join(f"{n} {k}" for k, n in counts.items())
        )
    if counts["unsafe"]:
        return EXIT_UNSAFE
    return EXIT_UNREADABLE if counts["unreadable"] else EXIT_OK


# -- diff --------------------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    from .drift import describe_code_change, env_changes
    from .walk import diff_trees

    # Both goldens verified before anything is compared: "no differences" against an empty or
    # missing bundle would be a lie. An error: main() reports it, exit 2.
    store_a, a = _load_golden(args.golden_a)
    store_a.verify(a)
    store_b, b = _load_golden(args.golden_b)
    store_b.verify(b)
    _out(f"a: {store_a.folder}")
    _out(f"b: {store_b.folder}")
    ga, gb = _claimed_globals(a), _claimed_globals(b)
    lines = [f"environment: {line}" for line in env_changes(a.environment, b.environment)]
    lines += [f"code changed: {name}" for name in describe_code_change(a.code, b.code)]
    lines += [f"global removed: {m}.{q}" for m, q in sorted(ga - gb)]
    lines += [f"global added: {m}.{q}" for m, q in sorted(gb - ga)]
    lines += [f"structure {line}" for line in diff_trees(a.structure, b.structure)]
    try:
        lines += _diff_examples(store_a, store_b)
        unreadable = False
    except errors.ModelpackError as exc:
        lines.append(f"examples: cannot compare — {exc.summary}")
        unreadable = True
    for line in lines:
        _out(line)
    if unreadable:
        return EXIT_UNREADABLE
    if not lines:
        same_bytes = a.bundle.sha256 == b.bundle.sha256
        _out(
            "no differences in environment, code, globals, structure or examples"
            + ("" if same_bytes else " (bundle bytes differ; goldens compare by behaviour)")
        )
        return EXIT_OK
    return EXIT_DIFFERENT


#: Examples whose outputs differ that diff shows one by one; the rest are counted.
_SHOW_EXAMPLES = 10


def _diff_examples(store_a: Any, store_b: Any) -> list[str]:
    """Outputs recorded for the same input in both goldens, compared exactly; inputs matched by
    their JSON encoding, so goldens recorded from different strategies still compare."""
    from .compare import compare, describe_differences
    from .engine.request import short_repr
    from .golden.examples import encode_value

    ea, eb = store_a.read_examples(), store_b.read_examples()

    def key(example: Any) -> str:
        return json.dumps(encode_value(example.input), sort_keys=True)

    by_key_b = {key(e): (i, e) for i, e in enumerate(eb)}
    keys_a = {key(e) for e in ea}
    lines: list[str] = []
    differing = common = 0
    for index, x in enumerate(ea):
        match = by_key_b.get(key(x))
        if match is None:
            continue
        common += 1
        j, y = match
        diffs = compare(x.output, y.output, exact=True)
        if diffs:
            differing += 1
            if differing <= _SHOW_EXAMPLES:
                where = f"#{index}" if index == j else f"a #{index}, b #{j}"
                lines.append(f"example {where}: input {short_repr(x.input)}")
                lines.extend("  " + d for d in describe_differences(diffs, limit=3))
    if differing > _SHOW_EXAMPLES:
        lines.append(f"... and {differing - _SHOW_EXAMPLES} more example(s) with other outputs")
    if differing:
        lines.insert(0, f"examples: {differing} of {common} shared input(s) give other outputs")
        lines.insert(1, "  expected = a, got = b")
    only_a = len(ea) - common
    only_b = sum(1 for e in eb if key(e) not in keys_a)
    if only_a or only_b:
        lines.append(
            f"examples: {only_a} recorded input(s) only in a, {only_b} only in b ({common} shared)"
        )
    return lines


# -- entry point -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpack",
        description="Inspect, scan and diff pytest-modelpack goldens. Never unpickles anything.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXIT_CODES.format(
            ok="safe / no differences", one="unsafe (scan, inspect) / differences (diff)"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help: str, description: str, epilog: str) -> Any:
        p = sub.add_parser(
            name,
            help=help,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    def allow_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--root",
            default=None,
            metavar="DIR",
            help="project root: classes and functions defined in its modules are allowed; "
            "its modules are imported to check them, so pass only a project you trust "
            "(default: none, no project code is allowed)",
        )
        p.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="MODULE.QUALNAME",
            help="also allow this exact global, e.g. --allow datetime.timedelta "
            "(repeatable; MODULE:QUALNAME for an exact split)",
        )

    p = command(
        "inspect",
        cmd_inspect,
        "manifest, structure tree, globals with safety verdicts",
        "Show a golden: manifest, integrity, the globals bundle.pkl references with\n"
        "their safety verdicts, project code fingerprints and the structure tree.",
        _INSPECT_EPILOG,
    )
    p.add_argument("golden", metavar="GOLDEN", help="golden folder (or a file in it)")
    allow_options(p)
    p = command(
        "scan",
        cmd_scan,
        "safety verdict for pickles and torch files (exit 1 if unsafe)",
        "Safety verdict for each FILE: safe, UNSAFE (with the globals that are not\n"
        "allowed and where they occur) or unreadable.",
        _SCAN_EPILOG,
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="a pickle, a torch.save file (zip or legacy), or a golden folder (its bundle.pkl)",
    )
    allow_options(p)
    p = command(
        "diff",
        cmd_diff,
        "what differs between two goldens",
        "What differs between two goldens: environment, project code, globals,\n"
        "structure tree and the outputs recorded for shared inputs.",
        _DIFF_EPILOG,
    )
    p.add_argument("golden_a", metavar="GOLDEN_A", help="golden folder (the expected side)")
    p.add_argument("golden_b", metavar="GOLDEN_B", help="golden folder (the side compared)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``modelpack`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except errors.ModelpackError as exc:  # e.g. an invalid --allow entry or --root
        print(exc.render(), file=sys.stderr)
        return EXIT_UNREADABLE
    except BrokenPipeError:
        # Output piped into `head`: stop quietly (and keep Python from complaining at exit).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_UNREADABLE
    except OSError as exc:  # a file that vanished or cannot be read mid-way
        from .golden.oserrors import remedy

        where = str(exc.filename or "a file")
        why, fix = remedy(exc.errno, "read", where, regen_command())
        error = errors.GoldenIOError(
            f"cannot read {where}: {why}",
            detail=[f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {exc.strerror or exc}"],
            fix=fix,
        )
        print(error.render(), file=sys.stderr)
        return EXIT_UNREADABLE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
