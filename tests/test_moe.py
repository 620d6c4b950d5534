"""MoE upcycling: equal to the dense model at initialisation (nine architectures, encoders and decoders, and
the two real models), vectorised dispatch equal to a per-token loop, router gradients, and a saved MoE model
of every architecture loading three ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import clpft
from clpft.models import save_model
from clpft.moe import hf_model_of, moe_settings, upcycle
from clpft.moe.modeling_clpft_moe import MoELinear
from conftest import make_tiny_model

TEXTS = ["what is protein cell", "the study of cancer risk in patients", "wing flow and air pressure at high speed"]


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
@pytest.mark.parametrize("where,k", [("intermediate", 1), ("intermediate", 2), ("output", 1)])
def test_upcycled_model_equals_base(tmp_path, family, where, k):
    model = make_tiny_model(tmp_path / family, family)
    before = model.encode(TEXTS, convert_to_tensor=True)
    upcycle(model, where=where, num_experts=3 if k == 2 else 2, experts_per_token=k)
    after = model.encode(TEXTS, convert_to_tensor=True)
    assert (before - after).abs().max().item() < 1e-5
    hf = hf_model_of(model)
    moe_layers = [m for m in hf.modules() if isinstance(m, MoELinear)]
    assert len(moe_layers) == hf.config.num_hidden_layers
    assert all(getattr(layer, where).dense is m for layer, m in zip(hf.encoder.layer, moe_layers))
    assert moe_settings(model)["where"] == where


def test_layer_subset_and_errors(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    upcycle(model, layers=[1])
    hf = hf_model_of(model)
    assert not isinstance(hf.encoder.layer[0].intermediate.dense, MoELinear)
    assert isinstance(hf.encoder.layer[1].intermediate.dense, MoELinear)
    with pytest.raises(ValueError, match="already"):
        upcycle(model)
    other = make_tiny_model(tmp_path / "o")
    with pytest.raises(ValueError, match="layers"):
        upcycle(other, layers=[5])
    with pytest.raises(ValueError, match="where"):
        upcycle(other, where="attention")


def per_token_reference(moe: MoELinear, x: torch.Tensor) -> torch.Tensor:
    """The definition, one token at a time."""
    out = []
    for token in x.reshape(-1, moe.in_features):
        logits = moe.router(token)
        top, experts = logits.topk(moe.experts_per_token)
        gates = top.softmax(-1)
        out.append(sum(g * (moe.weight[e] @ token + moe.bias[e]) for g, e in zip(gates, experts)))
    return torch.stack(out).reshape(*x.shape[:-1], moe.out_features)


@pytest.mark.parametrize("experts,k", [(2, 1), (4, 2), (3, 3)])
def test_vectorised_dispatch_matches_per_token_loop(experts, k):
    torch.manual_seed(0)
    moe = MoELinear.from_dense(nn.Linear(8, 12), num_experts=experts, experts_per_token=k)
    with torch.no_grad():  # make the experts differ so routing matters
        moe.weight.add_(torch.randn_like(moe.weight))
        moe.bias.add_(torch.randn_like(moe.bias))
        moe.router.weight.normal_()
    x = torch.randn(3, 7, 8, requires_grad=True)
    reference = per_token_reference(moe, x)
    torch.testing.assert_close(moe(x), reference, rtol=1e-5, atol=1e-5)
    # the "masked" dispatch (every expert on every token) gives the same outputs and gradients
    grads = {}
    for dispatch in ("grouped", "masked"):
        moe.dispatch = dispatch
        moe.zero_grad()
        x.grad = None
        out = moe(x)
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
        out.pow(2).sum().backward()
        grads[dispatch] = [x.grad.clone(), moe.weight.grad.clone(), moe.router.weight.grad.clone()]
    for a, b in zip(grads["grouped"], grads["masked"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("experts,k,bias", [(2, 1, True), (2, 1, False), (4, 2, True), (4, 2, False)])
def test_no_grad_forward_is_bit_identical_to_the_training_forward(experts, k, bias, autocast):
    """Without gradients the top-1 path skips multiplying by its gates (all exactly 1): the outputs must not
    move by a bit, in fp32 or under bf16 autocast (where the layer's output keeps its input's dtype)."""
    torch.manual_seed(0)
    moe = MoELinear.from_dense(nn.Linear(8, 12, bias=bias), num_experts=experts, experts_per_token=k)
    with torch.no_grad():
        moe.weight.add_(torch.randn_like(moe.weight))
        moe.router.weight.normal_()
    x = torch.randn(5, 7, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            evaluated = moe(x)
        trained = moe(x.clone().requires_grad_())
    assert evaluated.dtype == trained.dtype == x.dtype
    assert torch.equal(evaluated, trained.detach())
    trained.float().sin().sum().backward()  # the Function writing slots back to tokens passes gradients on
    assert moe.weight.grad.abs().sum() > 0 and moe.router.weight.grad.abs().sum() > 0


def test_empty_input():
    moe = MoELinear.from_dense(nn.Linear(8, 12))
    assert moe(torch.randn(0, 8)).shape == (0, 12)


def test_router_and_experts_get_gradients_with_top1():
    torch.manual_seed(0)
    moe = MoELinear.from_dense(nn.Linear(8, 12), num_experts=2, experts_per_token=1)
    moe(torch.randn(16, 8)).pow(2).sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    assert moe.weight.grad.abs().sum() > 0


def assert_loads_three_ways(folder, want, tmp_path):
    """clpft's loader, sentence-transformers and transformers (the last two on a machine without clpft) all
    give the embeddings ``want``."""
    config = json.loads((folder / "config.json").read_text())
    # 1. clpft's own loader, no flag
    loaded = clpft.load_model(folder)
    got = loaded.encode(TEXTS, convert_to_tensor=True)
    assert (got - want).abs().max().item() < 1e-6
    # a loaded MoE model saves again as a complete folder
    resaved = save_model(loaded, tmp_path / "resaved")
    assert (resaved / "modeling_clpft_moe.py").exists()
    assert json.loads((resaved / "config.json").read_text())["auto_map"] == config["auto_map"]

    # 2 + 3. sentence-transformers and transformers on a "machine without clpft": block its import
    script = f"""
import sys, json
sys.modules["clpft"] = None
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel
st = SentenceTransformer({str(folder)!r}, trust_remote_code=True)
emb = st.encode({TEXTS!r}, convert_to_tensor=True)
hf = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
batch = st[0].preprocess({TEXTS!r})
with torch.no_grad():
    tokens = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
mean = torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1)
print(json.dumps({{"st": emb.tolist(), "hf": mean.tolist(), "cls": type(hf).__name__}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["cls"] == config["architectures"][0]
    assert (torch.tensor(out["st"]) - want).abs().max().item() < 1e-6
    assert (torch.tensor(out["hf"]) - want).abs().max().item() < 1e-5


def test_moe_model_loads_three_ways(tmp_path):
    model = make_tiny_model(tmp_path / "base")
    upcycle(model)
    with torch.no_grad():  # a "trained" model: experts differ from each other
        for m in hf_model_of(model).modules():
            if isinstance(m, MoELinear):
                m.weight.add_(0.05 * torch.randn_like(m.weight))
    want = model.encode(TEXTS, convert_to_tensor=True)
    folder = save_model(model, tmp_path / "moe-model")

    config = json.loads((folder / "config.json").read_text())
    assert config["clpft_moe"] == {
        "where": "intermediate",
        "num_experts": 2,
        "experts_per_token": 1,
        "layers": [0, 1],
        "layer_list": "encoder.layer",
        "projections": ["intermediate.dense"],
    }
    assert config["auto_map"]["AutoModel"] == "modeling_clpft_moe.BertMoEModel"
    assert (folder / "modeling_clpft_moe.py").exists()
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))

    assert_loads_three_ways(folder, want, tmp_path)

    # Without trust_remote_code and without clpft the folder refuses to load (no silent dense model).
    refuse = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['clpft']=None\nfrom sentence_transformers import SentenceTransformer\n"
            f"SentenceTransformer({str(folder)!r})",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert refuse.returncode != 0 and "trust_remote_code" in refuse.stderr


def test_dense_model_saves_in_plain_format(tmp_path, tiny_model):
    from sentence_transformers import SentenceTransformer

    folder = save_model(tiny_model, tmp_path / "dense")
    assert "auto_map" not in json.loads((folder / "config.json").read_text())
    plain = SentenceTransformer(str(folder))
    torch.testing.assert_close(plain.encode(TEXTS), tiny_model.encode(TEXTS))


def test_gpu_check_script_runs_on_a_tiny_config(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    out = tmp_path / "gpu.json"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--tiny",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [v["dispatch"] for v in report["variants"]] == ["grouped", "masked"]
    assert all(v["tokens_per_second"] > 0 for v in report["variants"])
    assert report["trainable_parameters"] < report["total_parameters"]


def test_a_model_moe_cannot_upcycle_is_refused_before_any_encoding(tiny_beir, tmp_path, capsys, monkeypatch):
    """A GPT-2 model (its projections are Conv1D layers, which upcycling does not find): `clpft run` with the
    default --moe says so in one line, naming --moe none, before the base evaluation or mining encode anything."""
    from clpft.cli import main
    from clpft.mining import encode as encode_module
    from conftest import make_tiny_model

    folder = tmp_path / "gpt2"
    make_tiny_model(tmp_path / "gpt2-hf", family="gpt2").save(str(folder))
    encoded = []
    original = encode_module.encode_texts
    monkeypatch.setattr(encode_module, "encode_texts", lambda *a, **k: encoded.append(1) or original(*a, **k))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", "--data", str(tiny_beir), "--out", str(out), "--model", str(folder), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("clpft: error: cannot upcycle GPT2Model to MoE") and "--moe none" in error
    assert not encoded and not (out / "base_metrics.json").exists()
    argv = ["run", "--data", str(tiny_beir), "--out", str(out), "--model", str(folder), "--moe", "none"]
    assert main([*argv, "--num-negatives", "2", "--max-steps", "1", "--quiet"]) == 0


ARCHITECTURES = {  # family -> (the transformers class, the FFN input projections upcycling must find)
    "bert": ("BertModel", ["intermediate.dense"]),
    "xlm-roberta": ("XLMRobertaModel", ["intermediate.dense"]),
    "mpnet": ("MPNetModel", ["intermediate.dense"]),
    "distilbert": ("DistilBertModel", ["ffn.lin1"]),
    "modernbert": ("ModernBertModel", ["mlp.Wi"]),
    "electra": ("ElectraModel", ["intermediate.dense"]),
    "deberta_v2": ("DebertaV2Model", ["intermediate.dense"]),
    "qwen3": ("Qwen3Model", ["mlp.gate_proj", "mlp.up_proj"]),
    "gemma3": ("Gemma3TextModel", ["mlp.gate_proj", "mlp.up_proj"]),
}


@pytest.mark.parametrize("family", list(ARCHITECTURES))
def test_every_architecture_upcycles_exactly_and_loads_three_ways(family, tmp_path):
    from conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "base", family=family)
    base_class, projections = ARCHITECTURES[family]
    assert type(hf_model_of(model)).__name__ == base_class
    before = model.encode(TEXTS, convert_to_tensor=True)
    upcycle(model)
    settings = hf_model_of(model).config.clpft_moe
    assert settings["projections"] == projections
    after = model.encode(TEXTS, convert_to_tensor=True)
    assert (after - before).abs().max().item() <= 1e-5  # the upcycled model computes what the dense one did
    moe_layers = [m for m in hf_model_of(model).modules() if isinstance(m, MoELinear)]
    assert len(moe_layers) == 2 * len(projections)
    with torch.no_grad():  # a "trained" model: experts differ from each other
        for m in moe_layers:
            m.weight.add_(0.05 * torch.randn_like(m.weight))
    want = model.encode(TEXTS, convert_to_tensor=True)
    assert (want - before).abs().max().item() > 1e-4
    folder = save_model(model, tmp_path / "moe-model")
    assert json.loads((folder / "config.json").read_text())["architectures"] == [
        base_class.removesuffix("Model") + "MoEModel"
    ]
    assert_loads_three_ways(folder, want, tmp_path)


def test_the_output_projection_upcycles_on_a_gated_ffn(tmp_path):
    from conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "base", family="qwen3")
    before = model.encode(TEXTS, convert_to_tensor=True)
    upcycle(model, where="output", num_experts=3, experts_per_token=2)
    assert hf_model_of(model).config.clpft_moe["projections"] == ["mlp.down_proj"]
    assert (model.encode(TEXTS, convert_to_tensor=True) - before).abs().max().item() <= 1e-5


MPNET_FOLDER = Path(os.environ.get("CLPFT_MPNET", Path(__file__).resolve().parents[1] / "models" / "all-mpnet-base-v2"))


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_the_real_models_upcycle_exactly(name):
    """The packaged all-MiniLM-L6-v2 (BERT) and all-mpnet-base-v2 (MPNet; benchmarks/fetch_mpnet.py puts it in
    models/, or CLPFT_MPNET names its folder): max abs difference of fp32 embeddings <= 1e-5."""
    if name == "all-mpnet-base-v2" and not (MPNET_FOLDER / "modules.json").is_file():
        pytest.skip(f"{MPNET_FOLDER} absent: python benchmarks/fetch_mpnet.py --out {MPNET_FOLDER}")
    model = clpft.load_model(None if name == "all-MiniLM-L6-v2" else MPNET_FOLDER)
    texts = [*TEXTS, "Boundary layer transition on a flat plate at hypersonic speeds, with heat transfer."]
    before = model.encode(texts, convert_to_tensor=True)
    upcycle(model)
    after = model.encode(texts, convert_to_tensor=True)
    assert (after - before).abs().max().item() <= 1e-5
    assert sum(isinstance(m, MoELinear) for m in model.modules()) == len(hf_model_of(model).config.clpft_moe["layers"])
