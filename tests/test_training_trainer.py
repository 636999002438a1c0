"""Training proxies on real text: learning, metrics, eval sets, shortfalls, events, settings."""

import json
import math
import os

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from engine.errors import ConfigError, DataError
from engine.events import TaskFinished, TaskProgress, TaskStarted
from engine.training.evaluate import EvalItem, EvalSet, Evaluator, bits_per_byte, load_eval_set, tokenize_eval_set
from engine.training.export import export_hf
from engine.training.flops import matmul_params, train_flops_per_token
from engine.settings import ProxySettings
from engine.training.presets import PRESETS, ProxyPreset, get_preset, tokens_per_proxy
from benchmarks.textdata import BYTE_EOS, BYTE_VOCAB_SIZE, encode_bytes, stdlib_text_domains
from engine.training.trainer import train_proxies

SMALL = ProxyPreset(name="small", n_layers=2, n_heads=4, d_model=64, d_ff=128, seq_len=64, batch_size=8,
                    lr=3e-3, warmup_fraction=0.05, schedule="cosine")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def domains():
    return stdlib_text_domains(max_bytes_per_domain=300_000, names=("code", "docs"))


def _arrays(domains):
    return dict(train_arrays=[d.train for d in domains], val_arrays=[d.val for d in domains],
                bytes_per_token=[d.bytes_per_token for d in domains], domain_names=[d.name for d in domains])


@pytest.fixture(scope="module")
def learned(domains):
    """Three proxies, 100 steps (51k tokens each): code only, docs only, half and half."""
    events, records = [], {}
    results = train_proxies(
        SMALL, BYTE_VOCAB_SIZE, [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], tokens_per_proxy=100 * SMALL.tokens_per_step,
        seeds=[0, 1, 2], max_repetition=4.0, eval_tokens_per_domain=4096, eval_every=50, device="cpu",
        compile=False, on_event=events.append, on_record=lambda k, r: records.setdefault(k, []).append(r),
        **_arrays(domains))
    return results, events, records


def test_loss_decreases_on_real_text_and_follows_the_mixture(learned):
    results, _, records = learned
    for k in range(3):
        curve = [r["train/loss"] for r in records[k]]
        assert curve[0] < math.log(BYTE_VOCAB_SIZE)  # already below uniform at the first point
        assert curve[-1] < curve[0] - 0.3
        assert results[k].final_train_loss == curve[-1]
    code_only, docs_only, _ = (r.metrics for r in results)
    # each single-domain proxy is clearly better on its own domain
    assert code_only["code/bpb"] < docs_only["code/bpb"] - 0.3
    assert docs_only["docs/bpb"] < code_only["docs/bpb"] - 0.1


def test_results_account_tokens_flops_and_bpb(learned, domains):
    results, _, _ = learned
    steps = 100
    for r in results:
        assert r.steps == steps and r.tokens == steps * SMALL.tokens_per_step == r.requested_tokens
        assert sum(r.tokens_per_domain.values()) == r.tokens
        assert r.batched_with == 3 and r.note == ""
        assert r.flops == pytest.approx(train_flops_per_token(SMALL.llama_config(BYTE_VOCAB_SIZE), 64) * r.tokens)
        for d in domains:
            assert r.metrics[f"{d.name}/bpb"] == pytest.approx(r.metrics[f"{d.name}/loss"] / math.log(2) / d.bytes_per_token)
    assert results[0].tokens_per_domain == {"code": results[0].tokens, "docs": 0}
    half = results[2].tokens_per_domain
    assert half["code"] == half["docs"]


def test_bits_per_byte_formula():
    assert bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert bits_per_byte(2.0, 4.0) == pytest.approx(2.0 / math.log(2) / 4.0)


def test_events_and_curve_records(learned):
    _, events, records = learned
    assert isinstance(events[0], TaskStarted) and events[0].total == 100
    assert isinstance(events[-1], TaskFinished)
    progress = [e for e in events if isinstance(e, TaskProgress)]
    assert progress and progress[-1].completed == 100
    assert {"loss", "tokens_per_s", "mfu"} <= set(progress[-1].info)
    assert 0 < events[-1].info["mfu"] < 1 and events[-1].info["compiled"] is False  # short runs stay eager
    steps = [r["step"] for r in records[0]]
    assert steps == [50, 100]
    assert records[0][-1]["tokens"] == 100 * SMALL.tokens_per_step
    assert {"lr", "train/loss", "code/loss", "code/bpb", "docs/bpb"} <= set(records[0][0])


def test_eval_set_bpb_matches_a_direct_computation(learned, tmp_path):
    results, _, _ = learned
    path = tmp_path / "qa.jsonl"
    rows = [{"context": "def add(a, b):\n    return", "continuation": " a + b\n"},
            {"context": "import", "continuation": " numpy as np"},
            {"context": "The quick brown fox jumps over the lazy dog. " * 3, "continuation": "Ünïcode ✓"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    eval_set = load_eval_set(path)
    assert eval_set.name == "qa" and len(eval_set.items) == 3
    tokenized = tokenize_eval_set(eval_set, encode_bytes, BYTE_EOS, SMALL.seq_len)
    model = results[0].model
    evaluator = Evaluator(["code"], [np.arange(200) % 256], [1.0], SMALL.seq_len, 128, [tokenized])
    scores = evaluator.evaluate(model, torch.device("cpu"), None)
    hf = LlamaForCausalLM.from_pretrained(export_hf(model, 1, tmp_path / "proxy1")).eval()
    expected = []
    for row in rows:
        ctx, cont = encode_bytes(row["context"]), encode_bytes(row["continuation"])
        ids = torch.tensor([([BYTE_EOS] + ctx + cont)[-(SMALL.seq_len + 1):]])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids[:, :-1]).logits[0], -1)
        targets = ids[0, 1:]
        nll = -logp[torch.arange(len(targets)), targets][-len(cont):].sum().item()
        expected.append(nll / math.log(2) / len(row["continuation"].encode("utf-8")))
    assert scores[1]["eval:qa/bpb"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert scores[0]["eval:qa/bpb"] != scores[1]["eval:qa/bpb"]


def test_bad_eval_sets_are_reported(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_eval_set(bad)
    long = EvalSet("long", (EvalItem("a", "x" * 100),))
    with pytest.raises(DataError, match="shorten"):
        tokenize_eval_set(long, encode_bytes, BYTE_EOS, 64)


def test_shortfall_trains_fewer_steps_with_its_own_schedule(domains):
    tiny_docs = [domains[0].train, domains[1].train[: 20 * 65]]  # docs: 20 windows of 65 tokens
    records = {}
    results = train_proxies(
        SMALL, BYTE_VOCAB_SIZE, [[0.5, 0.5], [0.0, 1.0]], tokens_per_proxy=6 * SMALL.tokens_per_step, seeds=[0, 1],
        max_repetition=2.0, train_arrays=tiny_docs, val_arrays=[d.val for d in domains],
        bytes_per_token=[1.0, 1.0], domain_names=["code", "docs"], eval_tokens_per_domain=512, eval_every=1,
        device="cpu", compile=False, on_record=lambda k, r: records.setdefault(k, []).append(r))
    full, short = results
    assert full.steps == 6 and full.note == ""
    # docs-only may use 2 x 20 = 40 windows: 5 whole batches of 8
    assert short.steps == 5 and short.tokens == 5 * SMALL.tokens_per_step < short.requested_tokens
    assert short.tokens_per_domain == {"code": 0, "docs": short.tokens}
    assert "max_repetition" in short.note and short.batched_with == 1
    assert records[1][-1]["lr"] == pytest.approx(SMALL.lr * SMALL.min_lr_ratio)  # its schedule completed


def test_out_of_vocab_tokens_are_rejected(domains):
    with pytest.raises(DataError, match="Token ids"):
        train_proxies(SMALL, 100, [[1.0, 0.0]], tokens_per_proxy=SMALL.tokens_per_step, seeds=[0],
                      max_repetition=1.0, device="cpu", compile=False, **_arrays(domains))


def test_presets_and_settings():
    for preset in PRESETS.values():
        config = preset.llama_config(1000)
        model = LlamaForCausalLM(config) if preset.name in ("cpu", "regmix-1m") else None
        if model is not None:
            total = sum(p.numel() for p in model.parameters())
            assert preset.non_embedding_params() == total - 2 * 1000 * preset.d_model
            linear = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
            assert matmul_params(config) == linear
    assert PRESETS["regmix-1m"].non_embedding_params() == 1_312_000  # RegMix's "1M"
    cpu = get_preset("cpu")
    assert tokens_per_proxy(ProxySettings(tokens_per_proxy=123_456), cpu, 257) == 123_456
    assert tokens_per_proxy(ProxySettings(chinchilla_multiple=1.0), cpu, 257) == 20 * cpu.non_embedding_params()
    with pytest.raises(ConfigError):
        get_preset("huge")
    with pytest.raises(ConfigError):
        tokens_per_proxy(ProxySettings(chinchilla_multiple=1e-9), cpu, 257)


def test_many_proxies_on_several_cpu_threads_train_as_stacks_side_by_side(domains):
    """Eight proxies on two threads train as two stacks of four, one per thread: each proxy ends as
    it does in one stack on one thread, curve points reach the right run, and the events read as
    one task (one start, progress that never goes back, one finish over all eight)."""
    from engine.training.trainer import cpu_stacks

    assert (cpu_stacks(8, 2), cpu_stacks(4, 2), cpu_stacks(16, 2), cpu_stacks(8, 1)) == (2, 1, 2, 1)
    mixtures = np.random.default_rng(1).dirichlet([1.0, 1.0], size=8)
    tiny = ProxyPreset(name="tiny", n_layers=1, n_heads=2, d_model=32, d_ff=64, seq_len=32, batch_size=2, lr=3e-3)
    runs = {}
    for threads in (1, 2):
        events, records = [], {}
        torch.set_num_threads(threads)
        try:
            results = train_proxies(
                tiny, BYTE_VOCAB_SIZE, mixtures, tokens_per_proxy=6 * tiny.tokens_per_step, seeds=list(range(8)),
                max_repetition=4.0, eval_tokens_per_domain=1024, eval_every=3, device="cpu", dtype="float32",
                on_event=events.append, on_record=lambda k, r, records=records: records.setdefault(k, []).append(r),
                **_arrays(domains))
            assert torch.get_num_threads() == threads  # the caller's thread count is back
        finally:
            torch.set_num_threads(1)
        runs[threads] = results, events, records
    (alone, _, alone_records), (stacked, events, records) = runs[1], runs[2]
    assert [type(e).__name__ for e in events].count("TaskStarted") == 1
    (finished,) = [e for e in events if isinstance(e, TaskFinished)]
    assert finished.info["proxies"] == 8 and finished.info["stacks"] == 2 and finished.info["tokens_per_s"] > 0
    completed = [e.completed for e in events if isinstance(e, TaskProgress)]
    assert completed == sorted(completed) and completed[-1] == 6
    for k in range(8):
        assert [r["step"] for r in records[k]] == [3, 6]
        np.testing.assert_allclose([r["train/loss"] for r in records[k]], [r["train/loss"] for r in alone_records[k]],
                                   atol=1e-4)
        assert stacked[k].index == k and stacked[k].seed == k and stacked[k].batched_with == 8
        assert stacked[k].tokens_per_domain == alone[k].tokens_per_domain
        for key, value in alone[k].metrics.items():
            assert stacked[k].metrics[key] == pytest.approx(value, abs=1e-4), key


def test_micro_batches_split_the_batch_evenly_and_count_logits_only_where_kept():
    """Every micro-batch has one shape (a divisor of the batch: one compiled graph), and a loss that
    takes its logits a block at a time leaves the budget to the activations."""
    from engine.training.trainer import CPU_ACTIVATION_BUDGET_BYTES, micro_batch_rows

    cpu = torch.device("cpu")
    wide = ProxyPreset(name="wide", n_layers=2, n_heads=4, d_model=64, d_ff=128, seq_len=512, batch_size=12, lr=1e-3)
    per_row = 4 * 2 * (12 * 64 + 4 * 128) * 512  # activation bytes of one sequence of one proxy
    k = CPU_ACTIVATION_BUDGET_BYTES // (5 * per_row)  # five rows of K proxies fit, six do not
    assert micro_batch_rows(wide, 256, k, cpu, keeps_logits=False) == 4  # the largest divisor of 12 up to 5
    assert micro_batch_rows(wide, 50_000, k, cpu, keeps_logits=True) == 1  # whole logits would not fit
    assert micro_batch_rows(SMALL, 256, 3, cpu, keeps_logits=True) == SMALL.batch_size


def test_compiled_runs_keep_their_compile_cache_in_the_users_cache_folder(monkeypatch, tmp_path):
    """torch.compile's caches go under ~/.cache/olmix-tui (XDG_CACHE_HOME), unless the user chose a folder."""
    from engine.training.device import use_persistent_compile_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    use_persistent_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "olmix-tui" / "torch-compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    use_persistent_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
