"""The batched proxy model and trainer compute what K separate Llama models would.

Small real runs on byte-level text from the Python installation: the stacked model must match
transformers' LlamaForCausalLM (logits of exported proxies, and a plain HF + AdamW training loop
step by step), K proxies trained together must match each trained alone, clipping must be per
proxy, and a seed must reproduce a run bit for bit.
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from engine.training import cpu_kernels
from engine.training.cpu_ops import CpuKernelOps, CpuOps
from engine.training.export import export_hf, proxy_state_dict
from engine.training.loss import logit_blocks
from engine.training.model import StackedLlama, TorchOps, rotate
from engine.training.optim import TorchAdamW, clip_grad_norm_per_proxy_, lr_at
from engine.training.presets import ProxyPreset
from engine.training.sampler import SequenceBatcher, available_windows, plan_proxy_data
from benchmarks.textdata import BYTE_VOCAB_SIZE, stdlib_text_domains
from engine.training.trainer import train_proxies

TINY = ProxyPreset(name="tiny", n_layers=2, n_heads=2, d_model=32, d_ff=64, seq_len=32, batch_size=4,
                   lr=3e-3, warmup_fraction=0.2, schedule="cosine")
STEPS = 6
MIXTURES = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]
SEEDS = [11, 12, 13]
MAX_REPETITION = 4.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def domains():
    return stdlib_text_domains(max_bytes_per_domain=60_000, names=("code", "tests", "docs"))


def _train(domains, mixtures, seeds, preset=TINY, records=None, dtype="float32", compile=False, on_event=None):
    """Float32 by default: the equivalence tests compare against float32 transformers at 1e-4."""
    return train_proxies(
        preset, BYTE_VOCAB_SIZE, mixtures, [d.train for d in domains], [d.val for d in domains],
        [d.bytes_per_token for d in domains], STEPS * preset.tokens_per_step, seeds, MAX_REPETITION,
        domain_names=[d.name for d in domains], eval_tokens_per_domain=2048, eval_every=1, device="cpu",
        dtype=dtype, compile=compile, on_event=on_event or (lambda _event: None),
        on_record=None if records is None else (lambda k, r: records.setdefault(k, []).append(r)),
    )


@pytest.fixture(scope="module")
def batched(domains):
    records: dict[int, list[dict]] = {}
    return _train(domains, MIXTURES, SEEDS, records=records), records


def _train_losses(records, k):
    return np.array([r["train/loss"] for r in records[k]])


def test_stacked_logits_match_llama_at_init_tied_and_untied(tmp_path):
    for tied in (False, True):
        config = dataclasses.replace(TINY, tie_word_embeddings=tied).llama_config(BYTE_VOCAB_SIZE)
        model = StackedLlama(config, 3)
        model.init_weights([1, 2, 3])
        tokens = torch.randint(0, BYTE_VOCAB_SIZE, (3, 2, TINY.seq_len), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = model(tokens)
        for k in (0, 2):
            folder = export_hf(model, k, tmp_path / f"tied{tied}-{k}")
            hf = LlamaForCausalLM.from_pretrained(folder).eval()
            assert hf.config.tie_word_embeddings == tied
            with torch.no_grad():
                ref = hf(tokens[k]).logits
            torch.testing.assert_close(logits[k], ref, atol=1e-4, rtol=1e-4)


def test_exported_trained_proxies_match_llama(batched, tmp_path):
    results, _ = batched
    model = results[0].model
    tokens = torch.randint(0, BYTE_VOCAB_SIZE, (3, 2, TINY.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(tokens)
    for k in (0, 2):
        assert results[k].model is model and results[k].model_index == k
        hf = LlamaForCausalLM.from_pretrained(export_hf(model, k, tmp_path / str(k))).eval()
        with torch.no_grad():
            torch.testing.assert_close(logits[k], hf(tokens[k]).logits, atol=1e-4, rtol=1e-4)


def test_bfloat16_logits_match_llama_eager_attention_under_autocast(batched, tmp_path):
    """Under bfloat16 autocast the stacked model computes what transformers' eager attention does."""
    results, _ = batched
    model = results[0].model
    tokens = torch.randint(0, BYTE_VOCAB_SIZE, (3, 2, TINY.seq_len), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
        assert logits.dtype == torch.bfloat16
        for k in (0, 2):
            hf = LlamaForCausalLM.from_pretrained(export_hf(model, k, tmp_path / str(k)), attn_implementation="eager")
            torch.testing.assert_close(logits[k].float(), hf.eval()(tokens[k]).logits.float(), atol=2e-2, rtol=2e-2)


def _batcher(domains, proxies):
    """The trainer's batches for `proxies` (indices into MIXTURES and SEEDS): [len(proxies), B, T+1] per step."""
    arrays = [d.train for d in domains]
    available = available_windows(arrays, TINY.seq_len)
    plans = [plan_proxy_data(MIXTURES[k], STEPS * TINY.batch_size, available, MAX_REPETITION, SEEDS[k], TINY.batch_size)
             for k in proxies]
    return SequenceBatcher(arrays, TINY.seq_len, plans, TINY.batch_size)


def _transformers_losses(domains, k):
    """Proxy k trained alone as LlamaForCausalLM + torch AdamW + clip_grad_norm_ on its batches: losses per step."""
    config = TINY.llama_config(BYTE_VOCAB_SIZE)
    init = StackedLlama(config, 1)
    init.init_weights([SEEDS[k]])
    hf = LlamaForCausalLM(config)
    hf.load_state_dict(proxy_state_dict(init, 0))
    decay = [p for p in hf.parameters() if p.dim() >= 2]
    no_decay = [p for p in hf.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": TINY.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=TINY.lr, betas=TINY.betas)
    batcher = _batcher(domains, [k])
    losses = []
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, STEPS, TINY)
        batch = torch.from_numpy(batcher.batch(step)[0])
        logits = hf(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), TINY.grad_clip)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_batched_training_matches_a_plain_transformers_loop(batched, domains):
    """Proxy 1 of the batched run == LlamaForCausalLM + torch AdamW + clip_grad_norm_ on the same data."""
    _, records = batched
    np.testing.assert_allclose(_train_losses(records, 1), _transformers_losses(domains, 1), rtol=0, atol=1e-4)


def test_pytorch_ops_train_as_transformers_step_by_step(domains):
    """The GPU path, run here on the CPU (TorchOps: SDPA attention, the loss a block of logits at a
    time; TorchAdamW: foreach clipping, fused AdamW), follows LlamaForCausalLM + AdamW step by step
    for every proxy of the stack in float32, and tracks float32 under bfloat16 autocast."""
    batcher = _batcher(domains, range(len(SEEDS)))
    block = 40 * BYTE_VOCAB_SIZE  # 40 of a proxy's 128 rows at a time: 4 blocks per proxy
    assert len(logit_blocks(len(SEEDS), TINY.batch_size * TINY.seq_len, BYTE_VOCAB_SIZE, block)) == 4 * len(SEEDS)
    runs = {}
    for amp in (None, torch.bfloat16):
        model = StackedLlama(TINY.llama_config(BYTE_VOCAB_SIZE), len(SEEDS), TorchOps(loss_block=block))
        model.init_weights(SEEDS)
        optimizer = TorchAdamW(model, TINY, torch.device("cpu"))
        losses = []
        for step in range(STEPS):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
                step_losses = model.losses(torch.from_numpy(batcher.batch(step))).float()
            step_losses.sum().backward()
            optimizer.step(lr_at(step, STEPS, TINY))
            optimizer.zero_grad()
            losses.append(step_losses.detach())
        runs[amp] = torch.stack(losses).numpy()  # [steps, K]
    for k in range(len(SEEDS)):
        np.testing.assert_allclose(runs[None][:, k], _transformers_losses(domains, k), rtol=0, atol=1e-4)
    np.testing.assert_allclose(runs[torch.bfloat16], runs[None], atol=0.03)
    assert not np.array_equal(runs[torch.bfloat16], runs[None])


def test_logit_blocks_cover_every_logit_once_within_the_budget():
    """Whole proxies several at a time when a proxy's rows fit, else pieces of one proxy's rows."""
    for k, n, v, block in [(3, 40, 300, 40 * 300), (3, 40, 300, 100 * 300), (3, 40, 300, 7 * 300),
                           (5, 10, 300, 100), (1, 40, 300, 10**9)]:
        covered = np.zeros((k, n), dtype=int)
        for proxies, rows in logit_blocks(k, n, v, block):
            covered[proxies, rows] += 1
            assert len(range(k)[proxies]) * len(range(n)[rows]) * v <= max(block, v)
        assert (covered == 1).all()
    assert logit_blocks(3, 40, 300, 100 * 300) == [(slice(0, 2), slice(0, 40)), (slice(2, 4), slice(0, 40))]
    assert len(logit_blocks(3, 40, 300, 7 * 300)) == 3 * 6  # 7 rows at a time: 6 pieces of each proxy


def test_loss_in_blocks_matches_cross_entropy_with_a_tied_head():
    """The blockwise loss and per-token NLL equal F.cross_entropy whatever the blocks, also through
    a tied head (the embedding's transpose, not contiguous)."""
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(3, 40, 16, generator=gen)
    embed = torch.randn(3, 300, 16, generator=gen)
    targets = torch.randint(0, 300, (3, 40), generator=gen)
    weights = torch.tensor([1.0, 0.5, 2.0])
    h, e = hidden.clone().requires_grad_(), embed.clone().requires_grad_()
    logits = torch.bmm(h, e.transpose(1, 2))
    reference_nll = F.cross_entropy(logits.reshape(-1, 300), targets.reshape(-1), reduction="none").view(3, 40)
    (reference_nll.mean(1) * weights).sum().backward()
    for block in (300, 7 * 300, 100 * 300, 10**9):
        ops = TorchOps(loss_block=block)
        hb, eb = hidden.clone().requires_grad_(), embed.clone().requires_grad_()
        losses = ops.head_loss(hb, eb.transpose(1, 2), targets)
        (losses * weights).sum().backward()
        torch.testing.assert_close(losses, reference_nll.detach().mean(1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hb.grad, h.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(eb.grad, e.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ops.token_nll(hidden, embed.transpose(1, 2), targets), reference_nll.detach(),
                                   rtol=1e-5, atol=1e-5)


def test_proxies_trained_together_match_each_trained_alone(batched, domains):
    results, records = batched
    for k in range(len(MIXTURES)):
        alone_records: dict[int, list[dict]] = {}
        (alone,) = _train(domains, [MIXTURES[k]], [SEEDS[k]], records=alone_records)
        np.testing.assert_allclose(_train_losses(records, k), _train_losses(alone_records, 0), atol=1e-4)
        assert alone.tokens_per_domain == results[k].tokens_per_domain
        for key, value in alone.metrics.items():
            assert results[k].metrics[key] == pytest.approx(value, abs=1e-4), key


@pytest.fixture(params=["cpu kernels", "cpu pytorch ops", "pytorch ops"])
def ops(request):
    """Every path of the model: the CPU's fused kernels (when built here), the CPU's PyTorch ops, and
    the PyTorch ops of GPUs, whose loss here takes 16 rows of logits at a time (several blocks per proxy)."""
    if request.param == "cpu pytorch ops":
        return CpuOps()
    if request.param == "pytorch ops":
        return TorchOps(loss_block=16 * 300)
    if cpu_kernels.library() is None:
        pytest.skip(f"CPU kernels unavailable: {cpu_kernels.unavailable_reason()}")
    return CpuKernelOps()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_loss_and_its_gradients_match_autograd_cross_entropy(dtype, ops):
    """The head + loss equals bmm + F.cross_entropy (mean per proxy) in value and in the
    gradients of hidden states and head, also where a target's probability underflows float32
    and where it is so near 1 that bfloat16 rounds it to 1 (p - 1 must not vanish there)."""
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 40, 16, generator=gen).to(dtype)
    head = torch.randn(3, 16, 300, generator=gen)
    targets = torch.randint(0, 300, (3, 40), generator=gen)
    hidden[1, 7] = 0.0
    hidden[1, 7, 0] = 40.0
    head[1, 0, targets[1, 7]] = -10.0  # a target logit of -400, hundreds of nats below the best
    hidden[2, 5] = 0.0
    hidden[2, 5, 1] = 10.0
    head[2, 1] *= 0.1
    head[2, 1, targets[2, 5]] = 1.6  # target logit 16, the others ~N(0, 1): p = 1 - 3e-4
    weights = torch.tensor([1.0, 0.5, 2.0])
    results = []
    for fused in (True, False):
        h, w = hidden.clone().requires_grad_(), head.clone().requires_grad_()
        if fused:
            losses = ops.head_loss(h, w, targets)
        else:
            logits = torch.bmm(h, w.to(dtype)).float()
            nll = F.cross_entropy(logits.reshape(-1, 300), targets.reshape(-1), reduction="none")
            losses = nll.reshape(3, 40).mean(1)
        (losses * weights).sum().backward()
        results.append((losses.detach(), h.grad.float(), w.grad))
    (losses, grad_h, grad_w), (ref_losses, ref_h, ref_w) = results
    assert losses[1] > 9 and torch.isfinite(losses).all()
    loss_tolerance = 1e-5 if dtype == torch.float32 else 2e-3  # bfloat16 probabilities: 2^-8 per token
    torch.testing.assert_close(losses, ref_losses, rtol=loss_tolerance, atol=loss_tolerance)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # bfloat16 products, as autocast gives them
    torch.testing.assert_close(grad_h, ref_h, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grad_w, ref_w, rtol=tolerance, atol=tolerance)
    # The confident token against float64 (float32 cross-entropy itself loses p - 1 to cancellation there).
    w64 = head[2].to(dtype).double()
    p_minus_onehot = torch.softmax(hidden[2, 5].double() @ w64, dim=-1) - F.one_hot(targets[2, 5], 300)
    confident = (p_minus_onehot @ w64.T) * weights[2] / 40
    torch.testing.assert_close(grad_h[2, 5].double(), confident, rtol=max(tolerance, 1e-4), atol=0.0)


def test_bfloat16_attention_and_its_gradients_match_plain_autograd(ops):
    """Attention in bfloat16 (on the CPU: RoPE and heads-first layout in one custom pass, the causal
    softmax; else SDPA) gives the output and the q/k/v gradients of the same ops written plainly
    under autograd."""
    b, t, h, hd = 3, 16, 2, 8
    config = dataclasses.replace(TINY, n_heads=h, d_model=h * hd, seq_len=t).llama_config(BYTE_VOCAB_SIZE)
    rope = StackedLlama(config, 1).rope  # the model's own RoPE table
    gen = torch.Generator().manual_seed(4)
    qk = torch.randn(b, t, 2 * h, hd, generator=gen).to(torch.bfloat16)
    v = torch.randn(b, t, h, hd, generator=gen).to(torch.bfloat16)
    grad_out = torch.randn(b, h, t, hd, generator=gen).to(torch.bfloat16)
    results = []
    for fused in (True, False):
        qk_, v_ = qk.clone().requires_grad_(), v.clone().requires_grad_()
        if fused:
            out = ops.attention(qk_, v_, rope, scale=hd**-0.5)
        else:
            rotated = rotate(qk_, rope)
            q, k = (x.transpose(1, 2).to(torch.bfloat16) for x in (rotated[:, :, :h], rotated[:, :, h:]))
            scores = (q @ k.transpose(-1, -2)) * hd**-0.5
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v_.transpose(1, 2)
        out.backward(grad_out)
        results.append((out.detach().float(), qk_.grad.float(), v_.grad.float()))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)  # bfloat16 rounding of scores


def test_gradient_clipping_is_per_proxy():
    config = TINY.llama_config(BYTE_VOCAB_SIZE)
    model = StackedLlama(config, 3)
    model.init_weights([5, 6, 7])
    batch = torch.randint(0, BYTE_VOCAB_SIZE, (3, 4, TINY.seq_len + 1), generator=torch.Generator().manual_seed(2))
    model.losses(batch).sum().backward()
    params = list(model.parameters())
    with torch.no_grad():
        for p in params:  # make the proxies' gradient norms very different: 1x, 10x, 0.01x
            p.grad.mul_(torch.tensor([1.0, 10.0, 0.01]).view(-1, *([1] * (p.dim() - 1))))
    original = [p.grad.clone() for p in params]
    max_norm = 0.5
    norms = clip_grad_norm_per_proxy_(params, max_norm)
    for k in range(3):
        alone = [g[k].clone() for g in original]
        for g in alone:
            g.requires_grad_(False)
        holders = [torch.nn.Parameter(torch.zeros_like(g)) for g in alone]
        for h, g in zip(holders, alone):
            h.grad = g
        norm_alone = torch.nn.utils.clip_grad_norm_(holders, max_norm)
        torch.testing.assert_close(norms[k], norm_alone)
        for p, h in zip(params, holders):
            torch.testing.assert_close(p.grad[k], h.grad, rtol=1e-6, atol=1e-9)
    assert norms[2] < max_norm  # the small proxy was left alone
    torch.testing.assert_close(params[0].grad[2], original[0][2])


def test_same_seed_gives_bit_identical_runs(batched, domains):
    results, records = batched
    again_records: dict[int, list[dict]] = {}
    again = _train(domains, MIXTURES, SEEDS, records=again_records)
    assert again_records == records
    assert [r.metrics for r in again] == [r.metrics for r in results]
    for a, b in zip(again[0].model.parameters(), results[0].model.parameters()):
        assert torch.equal(a, b)
    other = _train(domains, MIXTURES[:1], [99])
    assert other[0].metrics != results[0].metrics


def test_bfloat16_autocast_tracks_float32_and_is_deterministic(batched, domains):
    """Mixed precision (bfloat16 matmuls and attention, float32 norms, RoPE and master weights) stays
    close to float32 training and reproduces itself bit for bit."""
    _, records = batched
    runs = []
    for _ in range(2):
        bf16_records: dict[int, list[dict]] = {}
        results = _train(domains, MIXTURES, SEEDS, records=bf16_records, dtype="bfloat16")
        runs.append((bf16_records, [r.metrics for r in results]))
    assert runs[0] == runs[1]
    for k in range(len(MIXTURES)):
        np.testing.assert_allclose(_train_losses(runs[0][0], k), _train_losses(records, k), atol=0.03)
        assert not np.array_equal(_train_losses(runs[0][0], k), _train_losses(records, k))


def test_compiled_training_matches_eager_in_bfloat16(domains):
    """Long CPU runs compile the step (trainer.COMPILE_MIN_STEPS): the custom autograd functions of
    the bfloat16 CPU path (RMSNorm, RoPE + heads-first, head + loss) must trace, and the compiled
    step must train as the eager one does."""
    runs = {}
    for compile in (False, True):
        records, events = {}, []
        _train(domains, MIXTURES[:2], SEEDS[:2], records=records, dtype="bfloat16", compile=compile,
               on_event=events.append)
        finished = [e for e in events if type(e).__name__ == "TaskFinished"][-1]
        assert finished.info["compiled"] is compile  # a failed compile falls back to eager and says so
        runs[compile] = records
    for k in range(2):
        np.testing.assert_allclose(_train_losses(runs[True], k), _train_losses(runs[False], k), atol=0.02)


def test_compiled_pytorch_ops_match_eager(domains):
    """The GPU step compiles TorchOps (SDPA attention, the loss in blocks with the head's gradient
    added up over a proxy's pieces): traced by torch.compile it gives eager's losses and gradients."""
    batch = torch.from_numpy(_batcher(domains, range(2)).batch(0))
    config = TINY.llama_config(BYTE_VOCAB_SIZE)
    results = []
    for compiled in (False, True):
        model = StackedLlama(config, 2, TorchOps(loss_block=40 * BYTE_VOCAB_SIZE))
        model.init_weights(SEEDS[:2])
        losses = (torch.compile(model.losses, dynamic=False) if compiled else model.losses)(batch)
        (losses * torch.tensor([1.0, 0.5])).sum().backward()
        results.append((losses.detach(), {name: p.grad for name, p in model.named_parameters()}))
    (eager, eager_grads), (traced, traced_grads) = results
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-5)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(traced_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
