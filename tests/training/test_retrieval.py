"""The run's files and the retrieval loop: config.toml re-runs a run, metrics.jsonl and its plot,
encode -> HammingIndex -> search equals `hashkern eval`, export loads with plain torch.load."""
import json
import os
import subprocess
import sys

import pytest
import torch
from synthetic_data import write_fashion_mnist

import hashkern
from hashkern import HammingIndex, unpack_bits
from hashkern.training.checkpoint import load_checkpoint
from hashkern.training.cli import main
from hashkern.training.runlog import read_metrics

TRAIN = ["--epochs", "2", "--batch-size", "8", "--bits", "8", "--query-per-class", "1", "--train-per-class", "2",
         "--topk", "10", "--no-progress", "--backbone-arg", "patch_size=7", "--backbone-arg", "embed_dim=16",
         "--backbone-arg", "depth=1", "--backbone-arg", "num_heads=2", "--model-arg", "hidden=16", "--seed", "5"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished WCH run on a tiny Fashion-MNIST folder: (data folder, run folder)."""
    data = str(tmp_path_factory.mktemp("fmnist"))
    write_fashion_mnist(data, n_train_per_class=4, n_test_per_class=1)
    out = str(tmp_path_factory.mktemp("run") / "wch")
    assert main(["train", "--method", "wch", "--data-dir", data, "--out", out, "--lr", "0.003", *TRAIN]) == 0
    return data, out


def test_the_written_config_reruns_the_run_bit_for_bit(run, tmp_path):
    _, out = run
    text = open(os.path.join(out, "config.toml")).read()
    assert 'method = "wch"' in text and "lr = 0.003" in text
    again = str(tmp_path / "again")
    assert main(["train", "--config", os.path.join(out, "config.toml"), "--out", again]) == 0
    first, second = load_checkpoint(os.path.join(out, "last.pt")), load_checkpoint(os.path.join(again, "last.pt"))
    assert second["train_config"] == first["train_config"]
    assert second["history"]["loss"] == first["history"]["loss"] and len(first["history"]["loss"]) == 4


def test_metrics_log_and_plot(run, tmp_path):
    _, out = run
    records = read_metrics(os.path.join(out, "metrics.jsonl"))
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and steps[-1]["epoch"] == 2.0
    assert [r["loss"] for r in steps] == load_checkpoint(os.path.join(out, "last.pt"))["history"]["loss"]
    final = records[-1]
    assert final["map@10"] == pytest.approx(json.load(open(os.path.join(out, "eval.json")))["map@10"])
    assert main(["plot", out, "--out", str(tmp_path / "curves.png")]) == 0
    assert open(tmp_path / "curves.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _map_from_search(q_codes, q_labels, index, db_labels, k):
    """mAP@k from the index's ranking (ties by id): AP over the relevant items of the top k."""
    _, idx = index.search(q_codes, k)
    rel = (db_labels[idx] == q_labels[:, None]).double()
    hits = rel.cumsum(1) / torch.arange(1, k + 1, dtype=torch.float64)
    found = rel.sum(1)
    return float(torch.where(found > 0, (hits * rel).sum(1) / found.clamp(min=1), torch.zeros_like(found)).mean())


def test_encode_index_search_gives_the_eval_map(run, tmp_path):
    _, out = run
    ckpt = os.path.join(out, "last.pt")
    assert main(["eval", ckpt, "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")]) == 0
    expected = json.load(open(tmp_path / "e.json"))["map@10"]
    assert main(["encode", ckpt, "--data", "query", "--out", str(tmp_path / "q.pt")]) == 0
    assert main(["encode", ckpt, "--data", "database", "--out", str(tmp_path / "db.hidx")]) == 0
    queries = torch.load(tmp_path / "q.pt", weights_only=True)
    meta = torch.load(tmp_path / "db.meta.pt", weights_only=True)
    index = HammingIndex.load(tmp_path / "db.hidx")
    assert queries["codes"].dtype == torch.uint8 and queries["bits"] == 8 and len(queries["ids"]) == 10
    assert len(index) == len(meta["labels"]) == len(meta["ids"]) == 20
    q_codes = unpack_bits(queries["codes"], 8)
    assert _map_from_search(q_codes, queries["labels"], index, meta["labels"], 10) == pytest.approx(expected,
                                                                                                   abs=1e-12)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_export_loads_with_plain_torch_load_and_load_model(run, tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    data, out = run
    ckpt, exported = os.path.join(out, "last.pt"), str(tmp_path / f"model{suffix}")
    assert main(["export", ckpt, "--out", exported]) == 0
    if suffix == ".pt":
        weights = torch.load(exported, weights_only=True)
    else:
        from safetensors.torch import load_file
        weights = load_file(exported)
    state = load_checkpoint(ckpt)
    assert weights.keys() == state["model"].keys()
    assert all(torch.equal(weights[k], v) for k, v in state["model"].items())
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    codes = {}
    for source in (ckpt, exported):
        model, preprocess = hashkern.load_model(source)
        codes[source] = model.encode(preprocess(images))
    assert torch.equal(codes[ckpt], codes[exported]) and codes[ckpt].shape == (5, 8)


def test_encode_from_an_export_equals_encode_from_its_checkpoint(run, tmp_path, capsys):
    """`hashkern encode` takes "a checkpoint (last.pt) or an export": the export carries its run's config."""
    data, out = run
    ckpt, exported = os.path.join(out, "last.pt"), str(tmp_path / "model.pt")
    assert main(["export", ckpt, "--out", exported]) == 0
    for source, name in ((ckpt, "a.pt"), (exported, "b.pt")):
        assert main(["encode", source, "--data", "database", "--data-dir", data, "--out", str(tmp_path / name)]) == 0
    a, b = (torch.load(tmp_path / name, weights_only=True) for name in ("a.pt", "b.pt"))
    assert torch.equal(a["codes"], b["codes"]) and torch.equal(a["labels"], b["labels"]) and len(a["ids"]) == 20
    meta = json.load(open(exported + ".json"))
    del meta["train_config"]  # an export from before exports carried it: split names are refused, clearly
    json.dump(meta, open(exported + ".json", "w"))
    capsys.readouterr()
    assert main(["encode", exported, "--data", "query", "--out", str(tmp_path / "c.pt")]) == 2
    assert "--data query needs the run's split" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "c.pt")


def test_load_model_keeps_import_hashkern_free_of_the_application():
    code = "import sys, hashkern; hashkern.load_model; print([m for m in sys.modules if 'training' in m])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"
