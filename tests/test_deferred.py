"""Big tensors' data hashed while the gate runs (issue 12): the bytes the interpreter reads are
verified before it reads them (``pickle_sha256``), the storages' bytes, which it never reads, are
hashed in the background, and no verdict is given before the whole file's sha256 matches.

The spans the manifest lists come from the scan; they must be exactly where the loader finds the
storages, and exactly the tensors' bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_modelpack import errors
from pytest_modelpack.golden import GoldenStore, fileio
from pytest_modelpack.golden.integrity import DEFER_MIN, deferred_spans, file_identity
from pytest_modelpack.golden.manifest import InvalidManifest, parse_manifest
from pytest_modelpack.safety import Allowlist, load_bundle, scan_stream

from .conftest import EXAMPLE, QUIET, SeedProject

# -- the spans: where the scan finds storages is where the loader maps them ----------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 3))


def _scan_spans(data: bytes) -> list[tuple[int, int]] | None:
    return scan_stream(io.BytesIO(data), Allowlist(None), whole_file=True).storages


@pytest.mark.parametrize("protocol", [4, 5])
def test_scan_spans_are_exactly_the_tensors_bytes(protocol: int) -> None:
    live = _model()
    data = pickle.dumps(live, protocol=protocol)
    spans = _scan_spans(data)
    assert spans is not None and len(spans) == 4
    tensors = sorted(p.detach().numpy().tobytes() for p in live.parameters())
    assert sorted(data[at : at + n] for at, n in spans) == tensors
    assert deferred_spans(spans) == tuple(s for s in spans if s[1] >= DEFER_MIN)
    assert [n for _, n in deferred_spans(spans)] == [512 * 512 * 4]


def test_storages_pickled_as_text_have_no_spans() -> None:
    """Protocols 0-2 write a storage's bytes as latin-1 text: no byte span to hash apart."""
    assert _scan_spans(pickle.dumps(_model(), protocol=2)) is None


def test_the_loader_maps_each_storage_at_its_scanned_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_modelpack.safety import streams

    live = _model()
    path = tmp_path / "bundle.pkl"
    path.write_bytes(pickle.dumps(live, protocol=4))
    spans = _scan_spans(path.read_bytes())
    mapped_at: list[tuple[int, int]] = []
    real = streams._mapped_storage

    def recording(mapping: object, at: int, nbytes: int, *rest: object) -> object:
        mapped_at.append((at, nbytes))
        return real(mapping, at, nbytes, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(streams, "_mapped_storage", recording)
    loaded = load_bundle(path, Allowlist(None))
    assert sorted(mapped_at) == spans
    x = torch.ones(2, 512)
    assert torch.equal(loaded(x), live(x))


def test_sha256_outside_hashes_every_byte_but_the_spans_and_where_they_are() -> None:
    data = bytes(range(256)) * 4
    with fileio_mapping(data) as mapping:
        got = fileio.sha256_outside(mapping, [(10, 90), (500, 24)])
        moved = fileio.sha256_outside(mapping, [(266, 90), (500, 24)])  # data[10] == data[266]
    bounds = struct.pack("<QQQQ", 10, 90, 500, 24)
    assert got == hashlib.sha256(data[:10] + data[100:500] + data[524:] + bounds).hexdigest()
    assert data[10:100] == data[266:356] and moved != got, "a moved span must hash differently"


@pytest.fixture
def fileio_mapping_path(tmp_path: Path) -> Path:
    return tmp_path / "data.bin"


class fileio_mapping:  # noqa: N801 - a context manager used like a function
    """An anonymous read-only-by-convention mapping holding ``data``."""

    def __init__(self, data: bytes) -> None:
        import mmap

        self.mapping = mmap.mmap(-1, len(data))
        self.mapping.write(data)

    def __enter__(self) -> object:
        return self.mapping

    def __exit__(self, *exc: object) -> None:
        self.mapping.close()


# -- the manifest fields -----------------------------------------------------------------------

MANIFEST = {
    "format": "pytest-modelpack golden",
    "format_version": 1,
    "name": "g",
    "bundle": {"file": "bundle.pkl", "size": 100, "sha256": "a" * 64, "protocol": 4},
    "examples": {"file": "examples.json", "size": 3, "sha256": "c" * 64, "count": 1},
    "created_by": {"test": "t.py::t", "device": "cpu"},
    "environment": {},
    "globals": [],
    "code": {},
    "structure": {},
}


def _with(**fields: object) -> bytes:
    data = json.loads(json.dumps(MANIFEST))
    data["bundle"].update(fields)
    return json.dumps(data).encode()


def test_manifest_storages_round_trip_and_old_manifests_have_none() -> None:
    entry = parse_manifest(_with(storages=[[10, 20], [40, 50]], pickle_sha256="b" * 64)).bundle
    assert entry.storages == ((10, 20), (40, 50)) and entry.pickle_sha256 == "b" * 64
    old = parse_manifest(_with()).bundle
    assert old.storages is None and old.pickle_sha256 is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"storages": [[10, 20]]}, "bundle.pickle_sha256"),
        ({"pickle_sha256": "b" * 64}, "bundle.storages"),
        ({"storages": [[40, 10], [10, 10]], "pickle_sha256": "b" * 64}, "bundle.storages[1]"),
        ({"storages": [[10, 20], [25, 10]], "pickle_sha256": "b" * 64}, "bundle.storages[1]"),
        ({"storages": [[90, 20]], "pickle_sha256": "b" * 64}, "bundle.storages[0]"),
        ({"storages": [[10, 0]], "pickle_sha256": "b" * 64}, "bundle.storages[0]"),
        ({"storages": [[-1, 5]], "pickle_sha256": "b" * 64}, "bundle.storages[0]"),
        ({"storages": [[1, True]], "pickle_sha256": "b" * 64}, "bundle.storages[0]"),
        ({"storages": [[1, 2, 3]], "pickle_sha256": "b" * 64}, "bundle.storages[0]"),
        ({"storages": "0:10", "pickle_sha256": "b" * 64}, "bundle.storages"),
        ({"storages": [[1, 2]], "pickle_sha256": "B" * 64}, "bundle.pickle_sha256"),
    ],
    ids=[
        "no-pickle-sha",
        "no-storages",
        "unsorted",
        "overlapping",
        "past-the-end",
        "empty",
        "negative",
        "bool",
        "triple",
        "not-a-list",
        "bad-hex",
    ],
)
def test_invalid_storages_are_an_invalid_manifest(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidManifest) as info:
        parse_manifest(_with(**fields))
    assert info.value.field == field


# -- the store: verify, settle ------------------------------------------------------------------


@pytest.fixture
def big_golden(tmp_path: Path) -> Iterator[GoldenStore]:
    """A golden written as regen writes it, with its big storage listed."""
    from pytest_modelpack.golden import CreatedBy
    from pytest_modelpack.golden.examples import examples_bytes

    store = GoldenStore(tmp_path / "goldens" / "g", "g", project_root=tmp_path)
    pending = store.prepare(_model())
    pending.add_storages(_scan_spans(pending.bundle_tmp.read_bytes()))
    pending.add_examples(examples_bytes([("x", 1)]), 1)
    manifest = pending.manifest(
        created_by=CreatedBy("t.py::t", "cpu"), globals_=[], code={}, structure={}
    )
    pending.commit(manifest)
    assert store.read_manifest().bundle.storages is not None
    yield store


def _flip(path: Path, at: int) -> None:
    """Damage one byte, replacing the file as git or an editor does (a new file renamed over it:
    a mapping of the old one stays valid)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(data))
    tmp.replace(path)


def test_a_flip_in_tensor_data_is_caught_by_settle_and_replaces_any_other_error(
    big_golden: GoldenStore,
) -> None:
    store = big_golden
    ((at, n),) = store.read_manifest().bundle.storages or ()
    _flip(store.bundle_path, at + n // 2)
    store.verify(store.read_manifest(), defer=True)  # the pickle's bytes are intact
    with pytest.raises(errors.CorruptGolden) as info:
        with store.settled():
            raise errors.OutputMismatch("what the damaged weights computed")
    assert info.value.summary == "bundle.pkl does not match its sha256"
    assert any("tensor data differ" in line for line in info.value.detail)
    # without deferring, verify itself refuses it, as before
    with pytest.raises(errors.CorruptGolden):
        GoldenStore(store.folder, "g").verify(store.read_manifest())
    # and regen's own check of the golden on disk does too: regen repairs it
    with pytest.raises(errors.CorruptGolden):
        GoldenStore(store.folder, "g").read_verified()


@pytest.mark.parametrize(
    "interrupt", [KeyboardInterrupt, lambda: pytest.exit.Exception("bye")], ids=["ctrl-c", "exit"]
)
def test_an_interrupt_passes_through_settled_without_waiting(
    big_golden: GoldenStore, interrupt: object
) -> None:
    store = big_golden
    ((at, n),) = store.read_manifest().bundle.storages or ()
    _flip(store.bundle_path, at + n // 2)
    store.verify(store.read_manifest(), defer=True)
    raised = interrupt()  # type: ignore[operator]
    with pytest.raises(type(raised)):
        with store.settled():
            raise raised
    store.release()


def test_a_flip_outside_tensor_data_is_refused_before_anything_is_read(
    big_golden: GoldenStore,
) -> None:
    store = big_golden
    ((at, _n),) = store.read_manifest().bundle.storages or ()
    _flip(store.bundle_path, at - 20)  # in the pickle, just before the storage's bytes
    with pytest.raises(errors.CorruptGolden) as info:
        store.verify(store.read_manifest(), defer=True)
    assert "outside the tensor data" in " ".join(info.value.detail)


def test_an_intact_golden_settles(big_golden: GoldenStore) -> None:
    store = big_golden
    store.verify(store.read_manifest(), defer=True)
    with store.settled():
        pass


def test_a_prefetched_hash_is_taken_over_only_for_the_same_file(big_golden: GoldenStore) -> None:
    store = big_golden
    manifest = store.read_manifest()
    store.prefetch()
    early = store._hashes._early
    assert early is not None
    store.verify(manifest, defer=True)
    assert store._hashes._pending is not None and store._hashes._pending[0] is early[0]
    store.settle()
    # the file replaced after the prefetch (as a regen's swap does): hashed afresh, and caught
    store.prefetch()
    early = store._hashes._early
    assert early is not None
    ((at, n),) = manifest.bundle.storages or ()
    _flip(store.bundle_path, at + n // 2)
    store.verify(manifest, defer=True)
    assert store._hashes._pending is not None and store._hashes._pending[0] is not early[0]
    with pytest.raises(errors.CorruptGolden):
        store.settle()


def test_prefetch_never_reads_through_a_link_out_of_the_project(
    big_golden: GoldenStore, tmp_path: Path
) -> None:
    store = big_golden
    outside = tmp_path.parent / f"{tmp_path.name}-outside.pkl"
    outside.write_bytes(store.bundle_path.read_bytes())
    store.bundle_path.unlink()
    store.bundle_path.symlink_to(outside)
    try:
        store.prefetch()
        assert store._hashes._early is None
        with pytest.raises(errors.UnsafeGolden):
            store.check_paths()
    finally:
        outside.unlink()


# -- the gate, as a user runs it ----------------------------------------------------------------

PACKAGE = """\
import torch


class Wide:
    \"\"\"A plain-class model with one 1 MiB weight (listed in the manifest) and a small head.\"\"\"

    def __init__(self):
        self.layer = torch.nn.Linear(512, 512)
        self.head = torch.nn.Linear(512, 2)
        # 2 MiB of int64 the model reads as a number (say, a step count): listed too
        self.steps = torch.zeros(262144, dtype=torch.int64)

    def __setstate__(self, state):
        import os

        if os.environ.get("WIDE_CANARY"):
            with open(os.environ["WIDE_CANARY"], "a") as f:
                f.write("loaded\\n")
        self.__dict__.update(state)

    def preprocess(self, xs):
        x = torch.zeros(512)
        x[: len(xs)] = torch.tensor(xs, dtype=torch.float32)
        return x

    def forward(self, batch):
        import os

        if os.environ.get("WIDE_STEPS"):  # what a loop over range(steps) would run on
            with open(os.environ["WIDE_STEPS"], "a") as f:
                f.write(f"{int(self.steps[0])}\\n")
        return self.head(torch.tanh(self.layer(batch)))

    def postprocess(self, out):
        return out


def build_model():
    torch.manual_seed(0)
    return Wide()
"""

CONFTEST = """\
import os
import time

import pytest
from package import build_model


@pytest.fixture(scope="session")
def wide():
    if os.environ.get("WIDE_EVENTS"):
        with open(os.environ["WIDE_EVENTS"], "a") as f:
            f.write(f"build {time.perf_counter()}\\n")
    return build_model()
"""

TEST = """\
from hypothesis import strategies as st


def test_wide(modelpack, wide):
    xs = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=8)
    modelpack.check(wide, name="wide", inputs=xs)
"""


@pytest.fixture
def wide(pytester: pytest.Pytester) -> Iterator[SeedProject]:
    from hypothesis import configuration

    project = SeedProject(pytester)
    project.write("package.py", PACKAGE)
    project.write("conftest.py", CONFTEST)
    project.write("test_wide.py", TEST)
    project.ini(examples=5, recorded=3, extra='modelpack_devices = "cpu"')
    previous = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(project.path / ".hypothesis")
    try:
        result = project.run("--modelpack-regen")
        assert result.ret == 0, result.stdout.str()
        yield project
    finally:
        configuration.set_hypothesis_home_dir(previous)


def _storage(project: SeedProject, nbytes: int = 512 * 512 * 4) -> tuple[int, int]:
    """The span of the storage of ``nbytes``: the 1 MiB weight, or the 2 MiB steps buffer."""
    spans = project.manifest("wide")["bundle"]["storages"]
    assert sorted(n for _, n in spans) == [512 * 512 * 4, 262144 * 8], spans
    ((at, n),) = [span for span in spans if span[1] == nbytes]
    return at, n


def test_regen_lists_the_big_storage_and_the_gate_passes(wide: SeedProject) -> None:
    at, n = _storage(wide)
    bundle = (wide.golden("wide") / "bundle.pkl").read_bytes()
    torch.manual_seed(0)  # as build_model() does: the layer's weight is the first drawn
    weight = torch.nn.Linear(512, 512).weight.detach().numpy().tobytes()
    assert bundle[at : at + n] == weight
    before = wide.snapshot()
    result = wide.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["wide *cpu*golden*passed*"])
    assert wide.snapshot() == before


def test_the_gate_starts_hashing_before_the_fixtures_build_the_model(
    wide: SeedProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test's setup starts the bundle's hash (its golden has the test's name), so it runs on
    another core while the session fixture builds the model; the check takes it over: one hash
    per check, started first."""
    import time

    events = tmp_path / "events"
    monkeypatch.setenv("WIDE_EVENTS", str(events))
    real = fileio.BackgroundHash.__init__

    def spy(self: fileio.BackgroundHash, f: object) -> None:
        with open(events, "a") as out:
            out.write(f"hash {time.perf_counter()}\n")
        real(self, f)  # type: ignore[arg-type]

    monkeypatch.setattr(fileio.BackgroundHash, "__init__", spy)
    result = wide.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    seen = [line.split()[0] for line in events.read_text().splitlines()]
    assert seen == ["hash", "build"], seen


def test_damaged_tensor_data_is_corrupt_golden_not_output_mismatch(
    wide: SeedProject,
) -> None:
    """The flipped weight changes every output; the verdict is still CORRUPT GOLDEN, because no
    verdict is given before the whole file's sha256 is confirmed."""
    at, _n = _storage(wide)
    path = wide.golden("wide") / "bundle.pkl"
    data = bytearray(path.read_bytes())
    struct.pack_into("<f", data, at + 4 * 7, 1e30)  # one weight of the first output row
    path.write_bytes(bytes(data))
    result = wide.run("--modelpack-golden")
    assert result.ret == 1
    out = result.stdout.str()
    assert "CORRUPT GOLDEN — bundle.pkl does not match its sha256" in out
    assert "OUTPUT MISMATCH" not in out
    assert "tensor data differ" in out
    result.stdout.fnmatch_lines(["*fix: restore the golden from version control*"])


def test_the_golden_never_runs_on_tensor_data_before_their_hash_matches(
    wide: SeedProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged number the model's code reads (a loop count, a size) could hang the gate or
    exhaust memory: the golden runs only once the whole file's sha256 matched."""
    steps = tmp_path / "steps"
    monkeypatch.setenv("WIDE_STEPS", str(steps))
    at, _n = _storage(wide, 262144 * 8)
    path = wide.golden("wide") / "bundle.pkl"
    data = bytearray(path.read_bytes())
    struct.pack_into("<q", data, at, 10**12)
    path.write_bytes(bytes(data))
    result = wide.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*CORRUPT GOLDEN — bundle.pkl does not match its sha256*"])
    seen = steps.read_text().split() if steps.exists() else []
    assert seen and set(seen) == {"0"}, "only the live and round-trip models ran"


def test_damaged_pickle_bytes_are_refused_before_the_golden_loads(
    wide: SeedProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = tmp_path / "canary"
    monkeypatch.setenv("WIDE_CANARY", str(canary))
    result = wide.run("--modelpack-golden")
    assert result.ret == 0
    loads = canary.read_text().count("loaded")  # the round-trip's reload and the golden's load
    assert loads == 2, "the canary sees every load"
    canary.unlink()
    at, _n = _storage(wide)
    _flip(wide.golden("wide") / "bundle.pkl", at - 40)
    result = wide.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*CORRUPT GOLDEN — bundle.pkl does not match its sha256*"])
    assert "outside the tensor data" in result.stdout.str()
    seen = canary.read_text().count("loaded") if canary.exists() else 0
    assert seen == loads - 1, "nothing of the golden may load before its bytes are verified"


def test_manifest_spans_that_lie_cost_time_not_a_false_verdict(wide: SeedProject) -> None:
    """Spans edited (and pickle_sha256 recomputed to match): the scan finds the storage
    elsewhere, so the gate waits for the whole file's sha256 before loading; it matches."""
    folder = wide.golden("wide")
    manifest = json.loads((folder / "manifest.json").read_text())
    at, n = manifest["bundle"]["storages"][0]
    bundle = (folder / "bundle.pkl").read_bytes()
    shifted = [[at - 64, n], *manifest["bundle"]["storages"][1:]]
    manifest["bundle"]["storages"] = shifted
    with fileio_mapping(bundle) as mapping:
        manifest["bundle"]["pickle_sha256"] = fileio.sha256_outside(mapping, shifted)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = wide.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()


def test_a_golden_without_spans_is_verified_whole_first(wide: SeedProject) -> None:
    """Goldens written before spans existed (0.2.0) pass as they did."""
    folder = wide.golden("wide")
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["bundle"]["storages"], manifest["bundle"]["pickle_sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = wide.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    result = wide.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["wide *cpu*regen*unchanged*"])


def test_regen_repairs_a_golden_whose_pickle_sha256_was_edited(wide: SeedProject) -> None:
    folder = wide.golden("wide")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["bundle"]["pickle_sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = wide.run("--modelpack-golden")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*CORRUPT GOLDEN — bundle.pkl does not match its sha256*"])
    result = wide.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["wide *cpu*regen*changed*repaired*"])
    assert wide.run("--modelpack-golden").ret == 0


assert QUIET  # the flags SeedProject.run passes to every inner run


def test_a_file_truncated_while_hashed_in_the_background_reads_short(tmp_path: Path) -> None:
    """The background hash reads with a descriptor, not a mapping: truncating the file under it
    (a file rewritten in place) gives a wrong digest, never a fault that kills the process."""
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * (128 << 10)  # 32 MiB
    path.write_bytes(data)
    with open(path, "rb") as f:
        background = fileio.BackgroundHash(f)
    os.truncate(path, 1 << 20)
    # whatever it had read when the file shrank: whole 8 MiB reads, then the first MiB's rest
    prefixes = {
        hashlib.sha256(data[:n]).hexdigest() for n in [1 << 20, *range(8 << 20, 33 << 20, 8 << 20)]
    }
    assert background.result() in prefixes


def test_which_test_wrote_a_golden_is_read_from_its_manifest_head() -> None:
    """Only a hint (which bundle to start hashing at a test's setup): read from the manifest as
    regen writes it, escapes and all; anything else is no answer."""
    from pytest_modelpack.golden.manifest import created_by_test, manifest_bytes

    manifest = parse_manifest(_with())
    manifest.created_by = type(manifest.created_by)('t "1".py::test_a[x]', "cpu")
    assert created_by_test(manifest_bytes(manifest)) == 't "1".py::test_a[x]'
    assert created_by_test(b'{"created_by": {"test": null}}') is None
    assert created_by_test(b"not json at all") is None


def test_the_json_report_says_where_each_check_spent_its_time(
    wide: SeedProject, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = wide.run("--modelpack-golden", f"--modelpack-report={report}")
    assert result.ret == 0, result.stdout.str()
    (row,) = json.loads(report.read_text())["checks"]
    stages = row["stages"]
    assert list(stages) == ["round_trip", "verify_scan", "drift", "sha256_wait", "load", "compare"]
    assert all(seconds >= 0 for seconds in stages.values())
    assert sum(stages.values()) <= row["seconds"] + 1e-3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_a_fifo_among_the_goldens_never_blocks_the_gate(wide: SeedProject) -> None:
    """The gate reads the head of every manifest beside the tests (which test wrote which
    golden) at the first test's setup: a FIFO there must be skipped, not waited on."""
    planted = wide.path / "goldens" / "planted"
    planted.mkdir()
    os.mkfifo(planted / "manifest.json")
    os.mkfifo(wide.golden("wide") / "examples.json.extra")
    result = wide.pytester.runpytest_subprocess(*QUIET, "--modelpack-golden", timeout=120)
    result.stdout.fnmatch_lines(["wide *cpu*golden*passed*"])


TWO_GOLDENS = """\
import pytest
from hypothesis import strategies as st


@pytest.mark.parametrize("which", ["g0", "g1"])
def test_two(modelpack, wide, which):
    xs = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=8)
    modelpack.check(wide, name=which, inputs=xs)
"""


def test_a_parametrized_test_gets_no_head_start_it_would_waste(
    wide: SeedProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that wrote several goldens: which one an item checks is not known at its setup, so
    none is hashed early (each check starts its own); one hash per check, none wasted."""
    wide.write("test_wide.py", TWO_GOLDENS)
    shutil.rmtree(wide.golden("wide"))
    result = wide.run("--modelpack-regen")
    assert result.ret == 0, result.stdout.str()
    started: list[object] = []
    real = fileio.BackgroundHash.__init__

    def spy(self: fileio.BackgroundHash, f: object) -> None:
        started.append(self)
        real(self, f)  # type: ignore[arg-type]

    monkeypatch.setattr(fileio.BackgroundHash, "__init__", spy)
    result = wide.run("--modelpack-golden")
    assert result.ret == 0, result.stdout.str()
    assert len(started) == 2


def test_manifest_heads_are_read_only_inside_the_project(tmp_path: Path) -> None:
    from pytest_modelpack.session import _goldens_by_test

    project, outside = tmp_path / "project", tmp_path / "outside"
    (project / "goldens" / "mine").mkdir(parents=True)
    (project / "goldens" / "linked").mkdir(parents=True)
    outside.mkdir()
    head = b'{"created_by": {"test": "t.py::t"}}'
    (project / "goldens" / "mine" / "manifest.json").write_bytes(head)
    (outside / "manifest.json").write_bytes(head)
    (project / "goldens" / "linked" / "manifest.json").symlink_to(outside / "manifest.json")
    an_hour_ago = time.time() - 3600  # written long before the run, as a committed golden is
    os.utime(project / "goldens" / "mine" / "manifest.json", (an_hour_ago, an_hour_ago))
    os.utime(outside / "manifest.json", (an_hour_ago, an_hour_ago))
    manifests: dict[Path, Any] = {}
    found = _goldens_by_test([str(project / "goldens")], project, manifests)
    assert found == {"t.py::t": [project / "goldens" / "mine"]}
    assert list(manifests) == [project / "goldens" / "mine"]
    assert manifests[project / "goldens" / "mine"][1] == head
    # Changed a moment ago: it could change again within its timestamp's tick, unseen (racy).
    os.utime(project / "goldens" / "mine" / "manifest.json")
    manifests.clear()
    _goldens_by_test([str(project / "goldens")], project, manifests)
    assert manifests == {}


def test_the_manifest_read_to_route_the_prefetch_is_read_once_while_it_is_that_file(
    tmp_path: Path,
) -> None:
    """The gate takes the manifest bytes the session read at setup (the file is opened once),
    but only while the file is the one read: one swapped in by a regen since is read again."""
    folder = tmp_path / "goldens" / "sentiment"
    shutil.copytree(EXAMPLE / "goldens" / "sentiment", folder)
    manifest = folder / "manifest.json"
    store = GoldenStore(folder, "sentiment", nodeid="t.py::t", project_root=tmp_path)
    store.manifest_seen = (file_identity(os.stat(manifest)), b"not the file's bytes")
    with pytest.raises(errors.CorruptGolden, match="not valid JSON"):
        store.read_manifest()  # the bytes seen were taken: they are what is judged
    store.manifest_seen = (file_identity(os.stat(manifest)), b"not the file's bytes")
    replaced = folder / "manifest.new"
    replaced.write_bytes(manifest.read_bytes())
    os.replace(replaced, manifest)  # another file (inode) now: read from disk
    assert store.read_manifest().bundle.file == "bundle.pkl"
    assert store.manifest_seen is None


def test_a_node_id_without_its_parameters() -> None:
    from pytest_modelpack.fixes import test_of

    assert test_of("a.py::t[cpu]") == "a.py::t"
    assert test_of("a.py::C::t[m1-cuda]") == "a.py::C::t"
    assert test_of("dir[x]/a.py::t") == "dir[x]/a.py::t"
    assert test_of("dir[x]/a.py::t[cpu]") == "dir[x]/a.py::t"


def test_the_background_hash_without_positional_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no ``os.preadv`` (Windows), the hash reads at the descriptor's offset: the
    prefetch does not keep its file for the verification (which opens the bundle again), and
    both hashes still give the file's sha256."""
    from pytest_modelpack.golden.integrity import DeferredHash

    monkeypatch.setattr(fileio, "POSITIONAL", False)
    path = tmp_path / "bundle.pkl"
    path.write_bytes(os.urandom(DEFER_MIN + 12345))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    hashes = DeferredHash()
    hashes.prefetch(path)
    early = hashes.take_early(path)
    assert early is not None and early[1] is None
    assert early[0].result() == expected
    with open(path, "rb") as f:
        background = fileio.BackgroundHash(f)
        f.read(10)  # the verification reads beside it
        assert background.result() == expected
