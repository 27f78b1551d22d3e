"""CUDA paths on a real GPU (issue 6). Skipped visibly without one; run by scripts/gpu-check."""

from __future__ import annotations

import pytest
import torch

from pytest_modelpack.apply import placed

from .conftest import SeedProject

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="cuda: torch.cuda.is_available() is False"
    ),
]


def test_round_trip_regen_and_gate_on_cpu_and_cuda(seed_project: SeedProject) -> None:
    assert seed_project.run("--modelpack-device", "cpu,cuda").ret == 0
    regen = seed_project.run("--modelpack-regen", "--modelpack-device", "cpu,cuda")
    assert regen.ret == 0, regen.stdout.str()
    regen.stdout.fnmatch_lines_random(
        ["sentiment*cpu*regen*created*", "sentiment*cuda*regen*checked*"]
    )
    gate = seed_project.run("--modelpack-golden", "--modelpack-device", "cpu,cuda")
    assert gate.ret == 0, gate.stdout.str()
    gate.stdout.fnmatch_lines_random(
        ["sentiment*cpu*golden*passed*", "sentiment*cuda*golden*passed*"]
    )


def test_golden_pickled_on_cuda_loads_on_cpu(seed_project: SeedProject) -> None:
    seed_project.edit(
        "conftest.py",
        "    return build_model(CORPUS)",
        "    model = build_model(CORPUS)\n    model.layer.cuda()\n    return model",
    )
    regen = seed_project.run("--modelpack-regen", "--modelpack-device", "cuda")
    assert regen.ret == 0, regen.stdout.str()
    assert b"cuda:0" in (seed_project.golden() / "bundle.pkl").read_bytes()
    assert seed_project.manifest()["created_by"]["device"] == "cuda"
    gate = seed_project.run("--modelpack-golden", "--modelpack-device", "cpu,cuda")
    assert gate.ret == 0, gate.stdout.str()


def test_placed_moves_to_cuda_and_restores() -> None:
    gru = torch.nn.GRU(3, 4, batch_first=True)
    before = gru(torch.ones(1, 2, 3))[0]
    with placed(gru, "cuda"):
        assert {p.device.type for p in gru.parameters()} == {"cuda"}
        on_gpu = gru(torch.ones(1, 2, 3, device="cuda"))[0].cpu()
    assert {p.device.type for p in gru.parameters()} == {"cpu"}
    assert torch.equal(gru(torch.ones(1, 2, 3))[0], before)
    torch.testing.assert_close(on_gpu, before, rtol=1e-3, atol=1e-3)
