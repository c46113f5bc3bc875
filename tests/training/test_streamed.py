"""Image lists streamed from disk: decoded on demand by workers, exact resume, memory that does not grow with N."""
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hashkern.training.cli import main
from hashkern.training.data import load_image_list, load_split
from hashkern.training.data.streamed import ImageFiles
from hashkern.training.train import TrainConfig, Trainer

TINY_VIT = {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}


def write_jpeg_list(root: str, n: int, size: int = 16, classes: int = 10) -> None:
    """n small JPEGs (class = a bright square's place) in root/img/, and DeepHash-pytorch lists
    train.txt (all n), test.txt and database.txt (the first 50 each), multi-hot labels."""
    from PIL import Image

    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        c = i % classes
        pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        r, q = divmod(c, 4)
        pixels[r * 4:(r + 1) * 4, q * 4:(q + 1) * 4] = 220
        Image.fromarray(pixels).save(os.path.join(root, "img", f"{i}.jpg"), quality=90)
        lines.append(f"img/{i}.jpg " + " ".join("1" if k == c else "0" for k in range(classes)) + "\n")
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.writelines(lines)
    for name in ("test.txt", "database.txt"):
        with open(os.path.join(root, name), "w") as f:
            f.writelines(lines[:50])


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("jpegs"))
    write_jpeg_list(root, 200)
    return root


def test_image_files_decode_what_the_in_memory_loader_decodes(jpegs):
    files = load_split("imagelist", jpegs, image_size=24).train.images
    assert isinstance(files, ImageFiles) and files.shape == (200, 3, 24, 24) and len(files) == 200
    whole = load_image_list(jpegs, os.path.join(jpegs, "train.txt"), image_size=24).images
    assert torch.equal(files[torch.tensor([3, 150, 7])], whole[[3, 150, 7]])
    assert torch.equal(files[5:9], whole[5:9]) and torch.equal(files[4], whole[4])
    assert torch.equal(files.subset(torch.tensor([9, 2]))[:], whole[[9, 2]])


def test_a_runs_image_resize_reaches_every_part_of_its_split(tmp_path):
    from PIL import Image

    from hashkern.training.data.streamed import decode_image
    from hashkern.training.train import config_split

    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, size=(12 + 6 * i, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    for name in ("train", "test", "database"):
        (tmp_path / f"{name}.txt").write_text("".join(f"{i}.png {i % 2} {1 - i % 2}\n" for i in range(4)))
    config = TrainConfig(method="nsh", dataset="imagelist", data_dir=str(tmp_path), image_size=8,
                         image_resize="center-crop")
    split = config_split(config)
    for part in (split.train, split.query, split.database, split.database.subset(torch.tensor([2, 0]))):
        assert part.images.resize == "center-crop"
    assert torch.equal(split.train.images[2], decode_image(str(tmp_path / "2.png"), 8, "center-crop"))
    assert not torch.equal(split.train.images[2], decode_image(str(tmp_path / "2.png"), 8))
    with pytest.raises(ValueError, match="image_resize must be one of"):
        TrainConfig(method="nsh", image_resize="pad")


def test_list_files_anywhere_and_image_folders(jpegs, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    with open(os.path.join(jpegs, "train.txt")) as f:
        (lists / "mine.txt").write_text("".join(f.readlines()[:30]))
    split = load_split("imagelist", jpegs, image_size=16, lists={"train": str(lists / "mine.txt")})
    assert len(split.train) == 30 and len(split.query) == 50
    folder = tmp_path / "folder"
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        for i in range(12):
            os.link(os.path.join(jpegs, "img", f"{i}.jpg"), folder / c / f"{i}.jpg")
    split = load_split("imagefolder", str(folder), query_per_class=2, train_per_class=4, image_size=16)
    assert (len(split.query), len(split.train), len(split.database)) == (4, 8, 12)
    assert split.train.images.paths[0].split(os.sep)[0] in ("cat", "dog")


def _cfg(**kw):
    base = dict(method="nsh", dataset="imagelist", bits=8, epochs=2, batch_size=16, lr=1e-3, topk=10, seed=3,
                image_size=16, backbone_kwargs=TINY_VIT, checkpoint_every=1,
                model_kwargs={"hidden": 16, "latent_dim": 8, "num_positives": 2})
    base.update(kw)
    return TrainConfig(**base)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_two_workers_interrupted_and_resumed_equal_the_straight_run(jpegs, tmp_path):
    cfg = _cfg(data_dir=jpegs, epochs=1)  # 12 steps of 16 of the 200 images
    straight = Trainer(cfg, str(tmp_path / "a"), progress=False, device="cpu")
    straight.fit()
    part = Trainer(cfg, str(tmp_path / "b"), progress=False, device="cpu", workers=2)
    part.fit(max_steps=5)
    del part
    resumed = Trainer(cfg, str(tmp_path / "b"), progress=False, device="cpu", workers=2, resume=True)
    assert resumed.step == 5
    resumed.fit()
    assert resumed.history["loss"] == straight.history["loss"]
    assert _sha(tmp_path / "a" / "last.pt") == _sha(tmp_path / "b" / "last.pt")
    logged = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["loss"] for r in logged] == straight.history["loss"]  # the resumed log is the straight run's

    # the run's checkpoint evaluates and encodes its list files, decoded by workers or not
    ckpt = str(tmp_path / "a" / "last.pt")
    assert main(["eval", ckpt, "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")]) == 0
    assert json.load(open(tmp_path / "e.json"))["num_queries"] == 50
    assert main(["encode", ckpt, "--data", "query", "--workers", "2", "--batch-size", "16",
                 "--out", str(tmp_path / "q.pt")]) == 0
    assert main(["encode", ckpt, "--data", os.path.join(jpegs, "test.txt"), "--out", str(tmp_path / "t.pt")]) == 0
    by_split, by_list = (torch.load(tmp_path / name, weights_only=True) for name in ("q.pt", "t.pt"))
    assert torch.equal(by_split["codes"], by_list["codes"]) and by_list["ids"][:2] == ["img/0.jpg", "img/1.jpg"]


RSS_SCRIPT = r"""
import json, resource, sys, time
t0 = time.time()
import torch
from hashkern.training.train import TrainConfig, Trainer
root, train_list, out = sys.argv[1:4]
cfg = TrainConfig(method="nsh", dataset="imagelist", data_dir=root, train_list=train_list, bits=8, epochs=1,
                  batch_size=32, image_size=64, seed=0, backbone_kwargs={"patch_size": 16, "embed_dim": 16,
                  "depth": 1, "num_heads": 2}, model_kwargs={"hidden": 16, "latent_dim": 8, "num_positives": 2})
trainer = Trainer(cfg, out, progress=False, device="cpu", workers=2)
trainer.fit(max_steps=1)
first = time.time() - t0
trainer.fit(max_steps=4)
# VmHWM: this program's own peak (ru_maxrss would carry the launching process's peak across exec)
own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"first_step_s": first, "peak_rss_mb": own, "worker_peak_rss_mb": worker,
                  "n": len(trainer.train_images)}))
"""


@pytest.mark.slow
def test_20000_jpegs_start_in_seconds_in_memory_that_does_not_grow_with_n(tmp_path):
    """Peak RSS of the main process stays below 2.5 GB, and (main and largest worker) at N = 20,000 within 40 MB
    of N = 2,000: the
    in-memory loader would hold 20,000 x 3 x 64 x 64 = 246 MB of decoded images."""
    root = str(tmp_path)
    start = time.time()
    write_jpeg_list(root, 20_000)
    with open(os.path.join(root, "train.txt")) as f:
        (tmp_path / "train2k.txt").write_text("".join(f.readlines()[:2000]))
    print(f"wrote 20,000 JPEGs in {time.time() - start:.1f}s")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = {}
    for n, lst in ((2000, str(tmp_path / "train2k.txt")), (20_000, os.path.join(root, "train.txt"))):
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, root, lst, str(tmp_path / f"run{n}")], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
        assert runs[n]["n"] == n
    print(runs)
    assert runs[20_000]["first_step_s"] < 30  # imports, list, model and the first step
    assert all(run["peak_rss_mb"] < 2500 for run in runs.values())  # the main process: torch and the model
    for key in ("peak_rss_mb", "worker_peak_rss_mb"):
        assert runs[20_000][key] - runs[2000][key] < 40, key
