"""CLP loss: λ=0 is InfoNCE exactly; the penalty matches a slow per-example reference for several
batch sizes and negative counts; masking; gradients reach negatives and their queries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clpft.losses import CLPLoss, InfoNCELoss


def random_batch(batch: int, negatives: int, dim: int = 16, seed: int = 0, known: float = 0.6):
    g = torch.Generator().manual_seed(seed)
    embeddings = [torch.randn(batch, dim, generator=g, requires_grad=True) for _ in range(2 + negatives)]
    width = 3
    labels = torch.full((batch, negatives, width), -1, dtype=torch.long)
    rows = 0
    for i in range(batch):
        for j in range(negatives):
            if torch.rand(1, generator=g).item() < known:
                count = int(torch.randint(1, width + 1, (1,), generator=g))
                labels[i, j, :count] = torch.arange(rows, rows + count)
                rows += count
    own_queries = torch.randn(max(rows, 1), dim, generator=g, requires_grad=True)
    return embeddings, own_queries, labels


def reference_infonce(embeddings, tau):
    """Loop over queries: -log softmax of the positive among every passage in the batch."""
    queries, candidates = embeddings[0], torch.cat(embeddings[1:])
    losses = []
    for i in range(len(queries)):
        scores = torch.stack([F.cosine_similarity(queries[i], c, dim=0) for c in candidates]) / tau
        losses.append(-(scores[i] - torch.logsumexp(scores, 0)))
    return torch.stack(losses).mean()


def reference_penalty(embeddings, own_queries, labels):
    """Loop over every example and negative; average cos over a negative's queries, then over negatives."""
    values = []
    for i in range(labels.shape[0]):
        for j in range(labels.shape[1]):
            rows = [int(r) for r in labels[i, j] if r >= 0]
            if rows:
                neg = embeddings[2 + j][i]
                values.append(torch.stack([F.cosine_similarity(neg, own_queries[r], dim=0) for r in rows]).mean())
    return 1 - torch.stack(values).mean() if values else torch.tensor(0.0)


class NoModel(torch.nn.Module):
    pass


@pytest.mark.parametrize("batch", [1, 2, 8])
@pytest.mark.parametrize("negatives", [1, 4])
def test_clp_matches_slow_reference(batch, negatives):
    embeddings, own_queries, labels = random_batch(batch, negatives, seed=batch * 10 + negatives)
    loss_fn = CLPLoss(NoModel(), penalty_weight=0.1, temperature=0.02)
    got_penalty = loss_fn.penalty(embeddings[2:], own_queries, labels)
    torch.testing.assert_close(got_penalty, reference_penalty(embeddings, own_queries, labels), rtol=1e-5, atol=1e-6)
    got = loss_fn.compute_loss_from_embeddings(embeddings, own_queries, labels)
    want = 0.9 * reference_infonce(embeddings, 0.02) + 0.1 * reference_penalty(embeddings, own_queries, labels)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_penalty_counts_every_example_not_only_the_first():
    embeddings, own_queries, labels = random_batch(4, 2, seed=3, known=1.0)
    loss_fn = CLPLoss(NoModel())
    full = loss_fn.penalty(embeddings[2:], own_queries, labels)
    first_only = loss_fn.penalty([e[:1] for e in embeddings[2:]], own_queries, labels[:1])
    assert not torch.allclose(full, first_only)


def test_lambda_zero_equals_infonce_exactly():
    embeddings, own_queries, labels = random_batch(8, 4, seed=1)
    clp = CLPLoss(NoModel(), penalty_weight=0.0, temperature=0.02).compute_loss_from_embeddings(
        embeddings, own_queries, labels
    )
    q = F.normalize(embeddings[0], dim=-1)
    c = F.normalize(torch.cat(embeddings[1:]), dim=-1)
    ce = F.cross_entropy(q @ c.T / 0.02, torch.arange(8))
    assert torch.equal(clp, ce)
    infonce = InfoNCELoss(NoModel(), temperature=0.02).compute_loss_from_embeddings(embeddings, None, None)
    assert torch.equal(infonce, ce)


def reference_hardness_infonce(embeddings, tau, alpha):
    """Loop over queries: the logit of each of the query's own negatives gets alpha * its cosine, detached."""
    queries, candidates = embeddings[0], torch.cat(embeddings[1:])
    batch = len(queries)
    losses = []
    for i in range(batch):
        scores = []
        for index, candidate in enumerate(candidates):
            cosine = F.cosine_similarity(queries[i], candidate, dim=0)
            own_negative = index >= batch and index % batch == i
            scores.append(cosine / tau + (alpha * cosine.detach() if own_negative else 0.0))
        scores = torch.stack(scores)
        losses.append(-(scores[i] - torch.logsumexp(scores, 0)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("batch,negatives", [(1, 1), (3, 2), (4, 4)])
def test_hardness_weighting_matches_a_slow_reference_in_value_and_gradient(batch, negatives):
    embeddings, _, _ = random_batch(batch, negatives, seed=7 + batch)
    loss_fn = InfoNCELoss(NoModel(), temperature=0.05, hardness_strength=5.0)
    got = loss_fn.compute_loss_from_embeddings(embeddings, None, None)
    got_grads = torch.autograd.grad(got, embeddings)
    want = reference_hardness_infonce(embeddings, 0.05, 5.0)
    want_grads = torch.autograd.grad(want, embeddings)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    plain = InfoNCELoss(NoModel(), temperature=0.05).compute_loss_from_embeddings(embeddings, None, None)
    assert not torch.allclose(got, plain)  # the weighting changed what the own negatives weigh
    with pytest.raises(ValueError, match="hardness_strength"):
        CLPLoss(NoModel(), hardness_strength=-1.0)


def test_unknown_queries_are_masked():
    embeddings, own_queries, labels = random_batch(2, 2, seed=2, known=1.0)
    loss_fn = CLPLoss(NoModel())
    masked = labels.clone()
    masked[1] = -1  # the second example's negatives have no known query
    want = reference_penalty(embeddings, own_queries, masked)
    torch.testing.assert_close(loss_fn.penalty(embeddings[2:], own_queries, masked), want)
    none_known = torch.full_like(labels, -1)
    assert loss_fn.penalty(embeddings[2:], own_queries, none_known).item() == 0.0


def test_gradients_reach_negatives_and_their_queries():
    embeddings, own_queries, labels = random_batch(2, 3, seed=4, known=1.0)
    CLPLoss(NoModel()).compute_loss_from_embeddings(embeddings, own_queries, labels).backward()
    for negative in embeddings[2:]:
        assert negative.grad is not None and negative.grad.abs().sum() > 0
    assert own_queries.grad.abs().sum() > 0


def test_penalty_pulls_negative_toward_its_query():
    """One gradient step on the penalty alone raises cos(negative, its query)."""
    embeddings, own_queries, labels = random_batch(1, 1, seed=5, known=1.0)
    loss_fn = CLPLoss(NoModel(), penalty_weight=1.0)
    before = loss_fn.penalty(embeddings[2:], own_queries, labels)
    before.backward()
    with torch.no_grad():
        stepped = [embeddings[2] - 1.0 * embeddings[2].grad]
        after = loss_fn.penalty(stepped, own_queries - 1.0 * own_queries.grad, labels)
    assert after < before


def test_invalid_hyperparameters():
    with pytest.raises(ValueError):
        CLPLoss(NoModel(), penalty_weight=1.5)
    with pytest.raises(ValueError):
        CLPLoss(NoModel(), temperature=0)


@pytest.mark.parametrize("penalty_weight,hardness", [(0.1, 0.0), (0.0, 0.0), (0.1, 5.0)])
def test_cached_clp_gradients_equal_clp(tiny_model, penalty_weight, hardness):
    from clpft.losses import CachedCLPLoss
    from clpft.training.collator import CLPDataCollator

    rows = [
        {
            "query": f"what is {a}",
            "positive": f"the study of {a}",
            "negative_1": f"the {b} study",
            "negative_2": f"{c} in mice",
            "own_queries": [[f"what is {b}"], []] if i % 2 else [[f"what is {c}", "protein"], [f"how does {b}"]],
        }
        for i, (a, b, c) in enumerate(
            [
                ("protein cell", "cancer risk", "heart"),
                ("wing flow", "air pressure", "sun"),
                ("vitamin heart", "blood brain", "gene"),
                ("shock layer", "heat speed", "moon"),
                ("water light", "drug treatment", "brain"),
            ]
        )
    ]
    collator = CLPDataCollator.for_model(tiny_model, with_own_queries=penalty_weight > 0)

    def features():
        batch = collator(rows)
        columns = ["query", "positive", "negative_1", "negative_2"] + (
            ["own_queries"] if "own_queries_input_ids" in batch else []
        )
        return [{k[len(c) + 1 :]: v for k, v in batch.items() if k.startswith(c + "_")} for c in columns], batch[
            "label"
        ]

    tiny_model.train()
    grads = []
    values = []
    for loss_fn in (
        CLPLoss(tiny_model, penalty_weight, hardness_strength=hardness),
        CachedCLPLoss(tiny_model, penalty_weight, mini_batch_size=2, hardness_strength=hardness),
    ):
        tiny_model.zero_grad()
        loss = loss_fn(*features())
        loss.backward()
        values.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None})
    # Relative: the two sum the same float32 terms in a different order, and the hardness weights scale the loss.
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5)


def test_clp_gradient_benchmark_measures_both_terms(tiny_model_dir, tmp_path):
    """benchmarks/studies/clp_gradients.py: a positive, finite ratio of the penalty's gradient to InfoNCE's for each
    set of trained weights and τ, and the derived columns follow from it."""
    import json
    import math
    import subprocess
    import sys
    from pathlib import Path

    rows = [
        {
            "query": f"query about topic {i}",
            "pos": [f"document on topic {i}"],
            "neg": [f"text on subject {i + j}" for j in range(1, 3)],
            "neg_q": [[f"question on subject {i + 1}"], []],
        }
        for i in range(3)
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "studies" / "clp_gradients.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--train",
            str(train),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "grad"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "grad.json").read_text())
    assert report["examples"] == 3 and set(report["results"]) == {"all", "moe"}
    for by_tau in report["results"].values():
        assert set(by_tau) == {"0.02", "0.05"}
        for r in by_tau.values():
            assert 0 < r["median_ratio"] < math.inf
            assert r["lambda_equal"] == pytest.approx(1 / (1 + r["median_ratio"]))
            assert r["penalty_share"]["0.1"] == pytest.approx(r["median_ratio"] / 9)
    assert "| moe | 0.02 |" in (tmp_path / "grad.md").read_text()
