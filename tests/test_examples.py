"""The python/ examples run on tiny data: drop-in losses in a plain loop, HammingIndex + mAP."""
import importlib.util
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("loss", ["nsh", "wch"])
def test_drop_in_losses(loss, capsys):
    losses = _load("drop_in_losses").main(["--loss", loss, "--steps", "3", "--batch-size", "6", "--images", "24",
                                           "--bits", "8"])
    assert len(losses) == 3 and all(x == x for x in losses)  # finite, not NaN
    assert f"{loss} loss" in capsys.readouterr().out


def test_index_and_map(capsys):
    m = _load("index_and_map").main(["--bits", "16", "--topk", "50"])
    out = capsys.readouterr().out
    assert "mAP@50" in out and "HammingIndex(nbits=16, size=500" in out
    assert m > 0.9  # well-separated synthetic clusters: ITQ codes retrieve their own class


def pylate_colbert_scores(queries_embeddings, documents_embeddings, queries_mask=None, documents_mask=None):
    """PyLate's colbert_scores, its torch path (lightonai/pylate, pylate/scores/colbert.py), transcribed."""
    import torch
    scores = torch.einsum("ash,bth->abst", queries_embeddings, documents_embeddings)
    if queries_mask is not None:
        scores = scores * queries_mask.unsqueeze(1).unsqueeze(3)
    if documents_mask is not None:
        scores = scores * documents_mask.unsqueeze(0).unsqueeze(2)
    return scores.max(axis=-1).values.sum(axis=-1)


@pytest.mark.parametrize("mask_dtype", ["float", "none"])
def test_colbert_scores_is_pylates(mask_dtype):
    import torch
    colbert_scores = _load("colbert_maxsim").colbert_scores
    q = torch.randn(3, 6, 16, dtype=torch.float64, requires_grad=True)
    d = torch.randn(5, 11, 16, dtype=torch.float64, requires_grad=True)
    masks = (None, None)
    if mask_dtype == "float":
        q_mask = (torch.rand(3, 6) > 0.3).double()
        d_mask = (torch.arange(11)[None] < torch.tensor([1, 11, 4, 7, 2])[:, None]).double()
        masks = (q_mask, d_mask)
    got = colbert_scores(q, d, *masks)
    expect = pylate_colbert_scores(q, d, *masks)
    torch.testing.assert_close(got, expect, atol=1e-12, rtol=1e-12)
    grad = torch.randn_like(expect)
    for g, e in zip(torch.autograd.grad(got, (q, d), grad), torch.autograd.grad(expect, (q, d), grad)):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-12)
    # PyLate's own docstring example
    queries = torch.tensor([[[1.], [0.], [0.], [0.]], [[0.], [2.], [0.], [0.]], [[0.], [0.], [3.], [0.]]])
    documents = torch.tensor([[[10.], [0.], [1.]], [[0.], [100.], [10.]], [[1.], [0.], [1000.]]])
    documents_mask = torch.tensor([[1., 1., 1.], [1., 0., 1.], [1., 1., 1.]])
    query_mask = torch.tensor([[1., 1., 1., 1.], [1., 1., 1., 1.], [1., 1., 0., 1.]])
    assert torch.equal(colbert_scores(queries, documents, query_mask, documents_mask),
                       torch.tensor([[10., 10., 1000.], [20., 20., 2000.], [0., 0., 0.]]))


def test_colbert_contrastive_training(capsys):
    losses = _load("colbert_maxsim").main(["--steps", "4", "--batch-size", "4"])
    assert len(losses) == 4 and all(loss == loss for loss in losses)  # finite, not NaN
    assert "contrastive loss" in capsys.readouterr().out
