"""`hashkern train | eval | bench | demo` end to end on a tiny Fashion-MNIST-format folder."""
import json
import os

import pytest
import torch
from synthetic_data import tiny_split, write_fashion_mnist

from hashkern.models import build_model
from hashkern.training.checkpoint import load_checkpoint
from hashkern.training.cli import main
from hashkern.training.demo import DEEP, SCHEDULES, format_table, run_demo, verdict

TRAIN = ["--epochs", "1", "--batch-size", "8", "--bits", "8", "--query-per-class", "1", "--train-per-class", "2",
         "--topk", "10", "--no-progress", "--backbone-arg", "patch_size=7", "--backbone-arg", "embed_dim=16",
         "--backbone-arg", "depth=1", "--backbone-arg", "num_heads=2", "--model-arg", "hidden=16"]


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fashion_mnist(str(root), n_train_per_class=4, n_test_per_class=1)  # 50 images, 10 classes
    return str(root)


def test_train_then_eval(tmp_path, fmnist, capsys):
    out = str(tmp_path / "run")
    rc = main(["train", "--method", "cibhash", "--data-dir", fmnist, "--out", out, *TRAIN])
    assert rc == 0
    text = capsys.readouterr().out
    assert "trained 2/2 steps" in text and "mAP@10" in text
    for name in ("last.pt", "eval.json", "pr.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    rc = main(["eval", os.path.join(out, "last.pt"), "--json", str(tmp_path / "e.json"),
               "--plot", str(tmp_path / "e.png")])
    assert rc == 0
    result = json.load(open(tmp_path / "e.json"))
    assert result["method"] == "cibhash" and result["bits"] == 8 and result["num_queries"] == 10
    assert 0 <= result["map@10"] <= 1 and 0 <= result["p@r2"] <= 1
    assert open(tmp_path / "e.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(os.path.join(out, "eval.json")))["map@10"] == pytest.approx(result["map@10"])


def test_keep_best_on_cibhashs_split_chooses_on_validation_and_reports_the_kept_model(tmp_path, capsys):
    """--data cifar10-cibhash --keep best: evaluations on the validation half choose best.pt, eval.json measures
    it on the queries, metrics.jsonl says which is which, and `encode --data validation` encodes that half."""
    from synthetic_data import write_cifar10

    from hashkern.training.runlog import read_metrics
    from hashkern.training.train import TrainConfig, config_split

    data, out = str(tmp_path / "cifar"), str(tmp_path / "run")
    write_cifar10(data, per_batch=20)  # 100 training-batch images, 20 test images
    flags = ["--data", "cifar10-cibhash", "--data-dir", data, "--out", out, "--epochs", "3", "--batch-size", "8",
             "--bits", "8", "--train-per-class", "2", "--topk", "10", "--no-progress", "--lr", "0.01",
             "--backbone-arg", "patch_size=8", "--backbone-arg", "embed_dim=16", "--backbone-arg", "depth=1",
             "--backbone-arg", "num_heads=2", "--model-arg", "hidden=16", "--eval-every", "2", "--keep", "best"]
    assert main(["train", "--method", "cibhash", *flags]) == 0
    assert "kept " + os.path.join(out, "best.pt") in capsys.readouterr().out
    history = load_checkpoint(os.path.join(out, "last.pt"))["history"]["eval"]
    assert [(r["step"], r["on"]) for r in history] == [(4, "validation"), (6, "validation")]  # epochs 2 and 3
    chosen = max(history, key=lambda r: r["map@10"])
    result = json.load(open(os.path.join(out, "eval.json")))
    assert result["step"] == chosen["step"] == load_checkpoint(os.path.join(out, "best.pt"))["step"]
    assert result["num_queries"] == 10 and result["database_size"] == 100
    records = read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["on"] for r in records if "map@10" in r] == ["validation", "validation", "query"]
    assert records[-1]["kept_step"] == chosen["step"] and records[-1]["map@10"] == pytest.approx(result["map@10"])
    assert main(["plot", out, "--out", str(tmp_path / "curves.png")]) == 0
    assert main(["encode", os.path.join(out, "best.pt"), "--data", "validation", "--out", str(tmp_path / "v.pt")]) == 0
    encoded = torch.load(tmp_path / "v.pt", weights_only=True)
    split = config_split(TrainConfig.from_dict(load_checkpoint(os.path.join(out, "best.pt"))["train_config"]))
    assert torch.equal(encoded["labels"], split.validation.labels) and len(encoded["ids"]) == 10
    # an export from before exports carried their run's config: no split names, and the decode size asked for
    assert main(["export", os.path.join(out, "best.pt"), "--out", str(tmp_path / "m.pt")]) == 0
    meta = json.load(open(tmp_path / "m.pt.json"))
    del meta["train_config"]
    json.dump(meta, open(tmp_path / "m.pt.json", "w"))
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "m.pt"), "--data", "validation", "--out", str(tmp_path / "w.pt")]) == 2
    assert "--data validation needs the run's split" in capsys.readouterr().err
    (tmp_path / "list.txt").write_text("")
    assert main(["encode", str(tmp_path / "m.pt"), "--data", str(tmp_path / "list.txt"),
                 "--out", str(tmp_path / "w.pt")]) == 2
    assert "pass --image-size" in capsys.readouterr().err


def test_cibhash_augmentations_evaluate_and_encode_with_their_normalisation(tmp_path, fmnist, monkeypatch):
    """--augment cibhash normalises with ImageNet's mean and std: eval, load_model and exports must too."""
    from hashkern.training import checkpoint_eval
    from hashkern.training.checkpoint_eval import evaluate_checkpoint
    from hashkern.training.retrieval import export_model, load_model

    out = str(tmp_path / "run")
    assert main(["train", "--method", "cibhash", "--augment", "cibhash", "--data-dir", fmnist, "--out", out,
                 *TRAIN]) == 0
    checkpoint = os.path.join(out, "last.pt")
    trained = json.load(open(os.path.join(out, "eval.json")))
    used = []
    encode_images = checkpoint_eval.encode_images
    monkeypatch.setattr(checkpoint_eval, "encode_images", lambda *a, normalize, **k: used.append(normalize) or
                        encode_images(*a, normalize=normalize, **k))
    again = evaluate_checkpoint(checkpoint)
    assert {(n.mean, n.std) for n in used} == {((0.485,), (0.229,))}
    for curve in ("precision", "recall"):  # the same codes as the trainer's evaluation
        assert again["pr"][curve] == pytest.approx(trained["pr"][curve])
    assert again["map@10"] == pytest.approx(trained["map@10"])
    export = str(tmp_path / "model.pt")
    export_model(checkpoint, export)
    for path in (checkpoint, export):
        _, preprocess = load_model(path)
        assert (preprocess.mean, preprocess.std) == ((0.485,), (0.229,))  # ImageNet's, on the 1-channel images


def test_interrupt_and_resume_from_the_command_line(tmp_path, fmnist):
    args = ["train", "--method", "nsh", "--data-dir", fmnist, *TRAIN, "--model-arg", "num_positives=2",
            "--checkpoint-every", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--max-steps", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--resume"]) == 0
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_clear_errors_and_nothing_overwritten(tmp_path, fmnist, capsys):
    rc = main(["train", "--method", "dpsh", "--data-dir", fmnist, "--out", str(tmp_path / "x"), *TRAIN])
    assert rc == 2 and "unknown method 'dpsh'" in capsys.readouterr().err
    rc = main(["train", "--method", "nsh", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "y"),
               *TRAIN])
    assert rc == 2 and "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "y" / "last.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    rc = main(["eval", str(bad), "--json", str(tmp_path / "e.json")])
    assert rc == 2 and "not a hashkern checkpoint" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "e.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"keep me")
    rc = main(["train", "--method", "nsh", "--data-dir", fmnist, "--out", str(run), *TRAIN])
    assert rc == 2 and "--resume" in capsys.readouterr().err
    rc = main(["train", "--method", "nsh", "--data-dir", fmnist, "--out", str(run), "--resume", *TRAIN])
    assert rc == 2 and "not a hashkern checkpoint" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == b"keep me"
    weights = tmp_path / "w.pt"
    torch.save({"x": torch.ones(1)}, weights)
    rc = main(["train", "--method", "wch", "--backbone", "vit-b16", "--weights", str(weights), "--data-dir", fmnist,
               "--out", str(tmp_path / "z"), "--epochs", "1", "--no-progress", "--query-per-class", "1",
               "--train-per-class", "2", "--batch-size", "8"])
    assert rc == 2 and "does not fit ViT-B/16" in capsys.readouterr().err
    rc = main(["bench", "--only", "hamming"])  # the package does not reach into a clone's benchmarks/
    assert rc == 2 and "python -m benchmarks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_demo_trains_side_by_side_with_the_sequential_numbers(tmp_path, capsys):
    split = tiny_split(n_query=1, n_train=2, n_db=3)
    kwargs = dict(bits=(6,), epochs=1, split=split, progress=False, methods=("nsh", "cibhash"),
                  schedule={"batch_size": 8, "database_size": None, "hidden": 16,
                            "backbone": {"name": "small-vit", "patch_size": 7, "embed_dim": 16, "depth": 1,
                                         "num_heads": 2}},
                  model_kwargs={"nsh": {"num_positives": 2}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of the 2 workers uses
    try:
        sequential = run_demo(out=str(tmp_path / "one"), workers=1, **kwargs)
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    parallel = run_demo(out=str(tmp_path / "two"), workers=2, **kwargs)
    assert "training 2 models in 2 processes" in capsys.readouterr().out
    for key in ("nsh", "cibhash"):
        assert parallel[key]["6"]["map"] == sequential[key]["6"]["map"]
        assert parallel[key]["6"]["epoch_loss"] == pytest.approx(sequential[key]["6"]["epoch_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="workers must be a positive int"):
        run_demo(out=str(tmp_path / "bad"), workers=0, **kwargs)


@pytest.mark.parametrize("method", DEEP)
def test_every_demo_schedule_builds_each_model_and_takes_a_step(method):
    # The GPU schedule only runs where there is a GPU: check here that its shapes fit together.
    for name, sched in SCHEDULES.items():
        model = build_model(method, 16, dict(sched["backbone"]), hidden=sched["hidden"])
        views = torch.randn(2, 6, 1, 28, 28)
        out = model.loss(views[0], views[1])
        out["loss"].backward()
        assert torch.isfinite(out["loss"]), name
        assert model.encode(views[0]).abs().eq(1).all(), name


def test_demo_on_tiny_data(tmp_path, capsys):
    split = tiny_split(n_query=1, n_train=2, n_db=3)
    results = run_demo(out=str(tmp_path), bits=(6,), epochs=1, split=split, progress=False, methods=("nsh",),
                       schedule={"batch_size": 8, "database_size": None, "hidden": 16,
                                 "backbone": {"name": "small-vit", "patch_size": 7, "embed_dim": 16, "depth": 1,
                                               "num_heads": 2}},
                       model_kwargs={"nsh": {"num_positives": 2}})
    text = capsys.readouterr().out
    assert "| NSH |" in text and "| LSH |" in text and "| ITQ on pixels |" in text
    assert set(results) == {"lsh", "itq", "nsh"} and set(results["nsh"]) == {"6"}
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["results"]["nsh"]["6"]["map"] == pytest.approx(results["nsh"]["6"]["map"])
    assert len(saved["results"]["nsh"]["6"]["epoch_loss"]) == 1
    assert open(tmp_path / "pr.png", "rb").read(4) == b"\x89PNG"
    assert (tmp_path / "table.md").read_text().startswith("| method |")


def test_demo_from_the_pretrained_backbone_adds_itq_on_its_features(tmp_path, capsys):
    split = tiny_split(n_query=1, n_train=2, n_db=3)
    results = run_demo(out=str(tmp_path), bits=(6,), epochs=1, split=split, progress=False, methods=("wch",),
                       schedule={"batch_size": 8, "database_size": None, "hidden": 16}, workers=1)
    text = capsys.readouterr().out
    assert "| ITQ on pretrained features |" in text and "backbone {'name': 'fmnist-vit', 'pretrained': True}" in text
    assert set(results) == {"lsh", "itq", "itq-features", "wch"}
    assert "WCH beats" in text or "WCH does NOT beat" in text
    assert "ITQ on pretrained features" in (tmp_path / "table.md").read_text()


def test_table_and_verdict_say_what_beats_what():
    res = {"lsh": {"16": {"map": 0.5, "p@r2": 0.1}}, "itq": {"16": {"map": 0.6, "p@r2": 0.2}},
           "nsh": {"16": {"map": 0.55, "p@r2": 0.3}}, "wch": {"16": {"map": 0.7, "p@r2": 0.4}}}
    table = format_table(res, [16], 1000)
    assert table.splitlines()[2] == "| LSH | 0.500 | 0.100 |"
    (line,) = verdict(res, [16])
    assert "best is WCH (0.700)" in line
    assert "NSH beats LSH and does NOT beat ITQ on pixels" in line and "WCH beats LSH and beats ITQ on pixels" in line


def test_demo_trains_with_the_library_options_and_says_so():
    """The demo keeps this library's options (the defaults now reproduce the official code) and names them."""
    from hashkern.training.demo import demo_model_options, options_note
    bb = dict(SCHEDULES["cpu"]["backbone"])
    wch = build_model("wch", 16, bb, hidden=8, **demo_model_options("wch", 16))
    assert (wch.distill.weight_norm, wch.distill.clamp_weights, wch.balance_on, wch.balance_weight) == \
        ("row", True, "tanh", 0.1)
    assert wch.head[0].eps == 1e-5
    nsh = build_model("nsh", 64, bb, hidden=8, **demo_model_options("nsh", 64))
    assert nsh.instance_weight == 1.0 and nsh.sorted_nce.sort_temperature is None  # the default, 0.32 / K
    cib = build_model("cibhash", 16, bb, hidden=8, **demo_model_options("cibhash", 16))
    assert cib.stochastic and cib.kl == "full"
    note = options_note(DEEP)
    assert "WCH: non-default options weight_norm='row', clamp_weights=True" in note
    assert "NSH: non-default options instance_weight=1.0" in note and "sort_temperature" not in note
    assert "CIBHash: non-default options stochastic=True" in note


def test_verdict_names_itq_on_features_when_the_demo_has_it():
    res = {"lsh": {"16": {"map": 0.5}}, "itq": {"16": {"map": 0.6}}, "itq-features": {"16": {"map": 0.66}},
           "wch": {"16": {"map": 0.65}}}
    (line,) = verdict(res, [16])
    assert "best is ITQ on pretrained features (0.660)" in line
    assert "WCH beats LSH, beats ITQ on pixels and does NOT beat ITQ on pretrained features" in line
