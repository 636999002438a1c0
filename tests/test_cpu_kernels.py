"""The fused CPU kernels compute what the PyTorch ops they replace compute.

Each kernel is checked against the eager path it stands in for (the model's own fallback, or plain
autograd), in float32 and bfloat16; the fused optimiser against torch.optim.AdamW after per-proxy
clipping; and a machine without the kernels trains with the fallback.
"""

import dataclasses

import numpy as np
import pytest
import torch

from engine.events import Message
from engine.training import cpu_kernels, optim
from engine.training.cpu_ops import CpuKernelOps, CpuOps, ops_for
from engine.training.model import StackedLlama, TorchOps
from engine.training.presets import ProxyPreset
from benchmarks.textdata import BYTE_VOCAB_SIZE
from engine.training.trainer import train_proxies

TINY = ProxyPreset(name="tiny", n_layers=2, n_heads=2, d_model=32, d_ff=64, seq_len=16, batch_size=3, lr=3e-3)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(cpu_kernels.library() is None, reason=f"CPU kernels unavailable: {cpu_kernels.unavailable_reason()}"),
]


def _rms_norm_and_grads(ops, x, weight, dtype, grad_out):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = ops.rms_norm(x, weight, 1e-6)
    assert out.dtype == dtype  # handed on in the matmuls' dtype
    out.backward(grad_out.to(out.dtype))
    return out.detach().float(), x.grad, weight.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_kernel_matches_the_pytorch_path(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 48, generator=gen) * 3
    weight = 1 + 0.1 * torch.randn(3, 48, generator=gen)
    grad_out = torch.randn(3, 20, 48, generator=gen)
    fused = _rms_norm_and_grads(CpuKernelOps(), x, weight, dtype, grad_out)
    reference = _rms_norm_and_grads(TorchOps(), x, weight, dtype, grad_out)
    out_tolerance = 1e-6 if dtype == torch.float32 else 8e-3  # one bfloat16 rounding step
    torch.testing.assert_close(fused[0], reference[0], rtol=out_tolerance, atol=out_tolerance)
    for got, want in zip(fused[1:], reference[1:]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _add_rms_norm_and_grads(ops, x, delta, weight, grads):
    x, delta, weight = (t.clone().requires_grad_() for t in (x, delta, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, normed = ops.add_rms_norm(x, delta, weight, 1e-6)
    assert total.dtype == torch.float32 and normed.dtype == torch.bfloat16
    # the sum goes on down the residual stream too, so its gradient has two sources
    torch.autograd.backward([total, normed], [grads[0], grads[1].to(normed.dtype)])
    return total.detach(), normed.detach().float(), x.grad, delta.grad.float(), weight.grad


def test_residual_add_and_norm_kernel_matches_the_pytorch_path():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, 40, generator=gen)
    delta = torch.randn(2, 24, 40, generator=gen).to(torch.bfloat16)  # a projection's output under autocast
    weight = 1 + 0.1 * torch.randn(2, 40, generator=gen)
    grads = (torch.randn(2, 24, 40, generator=gen), torch.randn(2, 24, 40, generator=gen))
    fused = _add_rms_norm_and_grads(CpuKernelOps(), x, delta, weight, grads)
    reference = _add_rms_norm_and_grads(TorchOps(), x, delta, weight, grads)
    torch.testing.assert_close(fused[0], reference[0], rtol=0, atol=0)  # x + delta, exactly
    torch.testing.assert_close(fused[1], reference[1], rtol=8e-3, atol=8e-3)  # one bfloat16 rounding
    for got, want in zip(fused[2:], reference[2:]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_softmax_xent_kernel_names_targets_outside_the_vocabulary_with_nan():
    logits = torch.randn(4, 10)
    before = logits.clone()
    nll = cpu_kernels.softmax_xent_forward_(logits, torch.tensor([1, 10, -1, 3]))
    assert torch.isnan(nll[1]) and torch.isnan(nll[2]) and torch.isfinite(nll[[0, 3]]).all()
    assert torch.equal(logits[1], before[1])  # the row of the bad target is left alone
    torch.testing.assert_close(logits[0].sum(), torch.tensor(0.0), atol=1e-6, rtol=0)  # softmax - one-hot sums to 0


def _model_with_grads(k=3, seed=0):
    config = TINY.llama_config(BYTE_VOCAB_SIZE)
    model = StackedLlama(config, k)
    model.init_weights(list(range(seed, seed + k)))
    batch = torch.randint(0, BYTE_VOCAB_SIZE, (k, TINY.batch_size, TINY.seq_len + 1), generator=torch.Generator().manual_seed(seed))
    return model, batch


def _set_grads(model, batch, scales, dtype=torch.float32):
    """Backpropagate the batch's loss with proxy k's gradients scaled by scales[k] (so norms differ)."""
    for p in model.parameters():
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        losses = model.losses(batch)
    (losses.float() * torch.tensor(scales)).sum().backward()


@pytest.mark.parametrize("working_dtype", [None, torch.bfloat16])
def test_fused_cpu_adamw_matches_torch_adamw_with_per_proxy_clipping(working_dtype):
    """Three steps with gradient norms far apart (one proxy clipped hard, one not at all): the fused
    optimiser's float32 weights follow torch's AdamW after clip_grad_norm_per_proxy_. With bfloat16
    working weights it reads bfloat16 gradients (what autocast's backward gives), hence the looser
    tolerance, and `finish` hands the float32 weights back."""
    preset = dataclasses.replace(TINY, grad_clip=0.5)
    initial, batch = _model_with_grads()
    fused_model, torch_model = _model_with_grads()[0], _model_with_grads()[0]
    fused = optim.FusedCpuAdamW(fused_model, preset, working_dtype=working_dtype)
    reference = optim.TorchAdamW(torch_model, preset, torch.device("cpu"))
    for step in range(3):
        lr = preset.lr * (step + 1) / 3
        _set_grads(torch_model, batch, [1.0, 20.0, 0.001])
        for p, q in zip(fused_model.parameters(), torch_model.parameters()):
            p.grad = q.grad.to(p.dtype)
        fused.step(lr)
        reference.step(lr)
        fused.zero_grad()
        reference.zero_grad()
    fused.finish()
    tolerance = 1e-6 if working_dtype is None else 5e-5
    for (name, p), (_, q), (_, p0) in zip(fused_model.named_parameters(), torch_model.named_parameters(),
                                         initial.named_parameters()):
        assert p.dtype == torch.float32, name
        assert not torch.equal(q, p0), name  # every tensor trained
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=tolerance, msg=name)


def test_fused_cpu_adamw_working_weights_are_the_masters_rounded():
    model, batch = _model_with_grads(k=2)
    fused = optim.FusedCpuAdamW(model, TINY, working_dtype=torch.bfloat16)
    _set_grads(model, batch, [1.0, 1.0], torch.bfloat16)
    assert all(getattr(m, n).grad.dtype == torch.bfloat16 for m, n in model.matmul_weights())
    fused.step(TINY.lr)
    for module, name, master in fused.working:
        working = getattr(module, name)
        assert working.dtype == torch.bfloat16 and working.requires_grad
        assert torch.equal(working.detach(), master.to(torch.bfloat16)), name


def test_without_kernels_training_uses_the_pytorch_paths_and_says_so(monkeypatch):
    monkeypatch.setenv("OLMIX_CPU_KERNELS", "0")
    cpu_kernels._load.cache_clear()
    try:
        assert cpu_kernels.library() is None and "OLMIX_CPU_KERNELS" in cpu_kernels.unavailable_reason()
        model, _ = _model_with_grads()
        assert isinstance(optim.make_optimizer(model, TINY, torch.device("cpu"), torch.bfloat16), optim.TorchAdamW)
        assert type(ops_for(torch.device("cpu"), compiled=False)) is CpuOps
        tokens = np.random.default_rng(0).integers(0, BYTE_VOCAB_SIZE, 4000).astype(np.uint16)
        messages = []
        (result,) = train_proxies(TINY, BYTE_VOCAB_SIZE, [[1.0]], [tokens], [tokens[:500]], [1.0], 2 * TINY.tokens_per_step,
                                  [0], 4.0, device="cpu", on_event=lambda e: messages.append(e) if isinstance(e, Message) else None)
        assert result.steps == 2 and np.isfinite(result.final_train_loss)
        assert any("Fused CPU kernels unavailable (OLMIX_CPU_KERNELS=0)" in m.text for m in messages)
    finally:
        monkeypatch.undo()
        cpu_kernels._load.cache_clear()
    assert cpu_kernels.library() is not None


def test_each_device_gets_its_ops_once_when_the_model_is_built():
    """Kernels on a CPU where they are built; PyTorch ops under torch.compile (which cannot trace
    them) and on GPUs, where the loss takes larger blocks of logits; the blocks and modules share one ops."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert type(ops_for(cpu, compiled=False)) is CpuKernelOps
    assert type(ops_for(cpu, compiled=True)) is CpuOps
    assert type(ops_for(gpu, compiled=True)) is TorchOps
    assert ops_for(gpu, compiled=True).loss_block > ops_for(cpu, compiled=True).loss_block
    ops = CpuKernelOps()
    model = StackedLlama(TINY.llama_config(BYTE_VOCAB_SIZE), 2, ops)
    assert model.ops is ops and all(block.ops is ops and block.attn.ops is ops for block in model.layers)


@pytest.mark.parametrize("breakage", ["a failing compiler", "a cache folder that cannot be made"])
def test_a_failed_build_leaves_the_kernels_off_with_its_reason(breakage, monkeypatch, tmp_path):
    if breakage == "a failing compiler":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        monkeypatch.setenv("CC", "false")  # a "compiler" that fails every build
    else:
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file where the folder would go
    cpu_kernels._load.cache_clear()
    try:
        assert cpu_kernels.library() is None
        assert cpu_kernels.unavailable_reason().startswith("building them failed")
        assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.tmp"))  # nothing half-built left
    finally:
        monkeypatch.undo()
        cpu_kernels._load.cache_clear()
