"""Self-supervised pretraining (hashkern pretrain), the shipped backbone weights and the demo protocol."""
import hashlib
import os
import shutil

import pytest
import torch
from synthetic_data import class_images, write_fashion_mnist

import hashkern.models.backbones as backbones
import hashkern.models.pretrained as pretrained
from hashkern.models import build_backbone, build_model
from hashkern.training.cli import main
from hashkern.training.data import load_pretraining_images, load_split
from hashkern.training.pretrain import PretrainConfig, Pretrainer

SHIPPED = os.path.join(pretrained.WEIGHTS_DIR, pretrained.PRETRAINED["fmnist-vit"].file)


def _tiny_config(**kw):
    return PretrainConfig(epochs=2, batch_size=16, warmup_steps=2, **kw)


def _images(n=64):
    return torch.from_numpy(class_images(n // 10 + 1)[0][:n])


def test_shipped_weights_load_by_name():
    model = build_backbone("fmnist-vit", pretrained=True)
    saved = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert pretrained.file_sha256(SHIPPED) == pretrained.PRETRAINED["fmnist-vit"].sha256
    assert os.path.getsize(SHIPPED) <= 10 * 2 ** 20
    random_init = build_backbone("fmnist-vit", pretrained=False)
    assert not torch.equal(random_init.vit.pos_embed, model.vit.pos_embed)
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 64) and model.tokens(x).shape == (3, 16, 64)


def test_a_checkpoint_does_not_read_the_shipped_file_again(monkeypatch):
    model = build_model("nsh", 16, {"name": "fmnist-vit", "pretrained": True}, hidden=32)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", "/nonexistent")
    with pytest.raises(FileNotFoundError):
        build_model("nsh", 16, {"name": "fmnist-vit", "pretrained": True}, hidden=32)
    again = build_model("nsh", 16, {"name": "fmnist-vit", "pretrained": True}, load_weights=False, hidden=32)
    again.load_state_dict(model.state_dict())


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_damaged_or_missing_weights_are_refused(tmp_path, damage):
    target = tmp_path / pretrained.PRETRAINED["fmnist-vit"].file
    if damage != "missing":
        shutil.copy(SHIPPED, target)
        data = bytearray(target.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0x10
        else:
            data = data[:-100]
        target.write_bytes(bytes(data))
    error, message = (FileNotFoundError, "missing") if damage == "missing" else (ValueError, "SHA-256")
    with pytest.raises(error, match=message):
        backbones.pretrained_backbone("fmnist-vit", weights_dir=str(tmp_path))


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="unknown pretrained backbone"):
        backbones.pretrained_backbone("imagenet-vit")
    with pytest.raises(TypeError, match="pretrained"):
        build_backbone("fmnist-vit", pretrained="yes")
    with pytest.raises(ValueError, match="fixed architecture"):
        build_backbone("fmnist-vit", depth=4)
    with pytest.raises(ValueError, match="not weights"):
        build_backbone("fmnist-vit", weights="x.pt")
    with pytest.raises(ValueError, match="min_crop"):
        PretrainConfig(min_crop=0)
    with pytest.raises(ValueError, match="batch_size"):
        PretrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="pretraining supports"):
        load_pretraining_images("cifar10", "/tmp")


def test_protocol_keeps_queries_out_of_pretraining(tmp_path):
    write_fashion_mnist(str(tmp_path), n_train_per_class=12, n_test_per_class=3)
    split = load_split("fashion-mnist", str(tmp_path), query_per_class=2, train_per_class=5)
    pool = load_pretraining_images("fashion-mnist", str(tmp_path))
    assert pool.shape == (120, 1, 28, 28)

    def digests(images):
        return {hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in images}

    assert len(digests(pool)) == 120  # every synthetic image is distinct, so bytes identify images
    assert split.query.official_test.all() and not split.train.official_test.any()
    assert not digests(split.query.images) & digests(pool)
    assert digests(split.train.images) <= digests(pool)
    assert len(split.query) + len(split.train) + len(split.database) == 150
    all_images = digests(split.query.images) | digests(split.train.images) | digests(split.database.images)
    assert len(all_images) == 150  # disjoint and complete


def test_pretraining_resumes_exactly(tmp_path):
    images = _images()
    straight = Pretrainer(_tiny_config(), str(tmp_path / "a"), images=images, progress=False)
    straight.fit()
    first = Pretrainer(_tiny_config(), str(tmp_path / "b"), images=images, progress=False)
    first.fit(max_steps=3)
    resumed = Pretrainer(_tiny_config(), str(tmp_path / "b"), images=images, resume=True, progress=False)
    assert resumed.step == 3
    resumed.fit()
    assert straight.history["loss"] == resumed.history["loss"]
    sha_a = straight.export_backbone(str(tmp_path / "a.pt"))
    sha_b = resumed.export_backbone(str(tmp_path / "b.pt"))
    assert sha_a == sha_b == pretrained.file_sha256(str(tmp_path / "b.pt"))
    assert not torch.equal(straight.model.backbone.vit.pos_embed,
                           Pretrainer(_tiny_config(), str(tmp_path / "c"), images=images).model.backbone.vit.pos_embed)


def test_resume_with_another_configuration_is_refused(tmp_path):
    images = _images()
    Pretrainer(_tiny_config(), str(tmp_path), images=images, progress=False).fit(max_steps=1)
    with pytest.raises(ValueError, match="different configuration"):
        Pretrainer(_tiny_config(temperature=0.5), str(tmp_path), images=images, resume=True)
    with pytest.raises(FileExistsError):
        Pretrainer(_tiny_config(), str(tmp_path), images=images)


def test_cli_pretrain_exports_loadable_weights(tmp_path, capsys):
    data = tmp_path / "fmnist"
    write_fashion_mnist(str(data), n_train_per_class=4, n_test_per_class=1)
    out, export = tmp_path / "run", tmp_path / "bb.pt"
    args = ["pretrain", "--data-dir", str(data), "--epochs", "1", "--batch-size", "8", "--threads", "1",
            "--out", str(out), "--export", str(export), "--no-progress"]
    assert main(args + ["--max-steps", "2"]) == 0
    assert not export.exists()  # not finished yet
    assert main(args + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and pretrained.file_sha256(str(export)) in printed
    state = torch.load(str(export), weights_only=True)
    assert set(state) == set(build_backbone("fmnist-vit", pretrained=False).state_dict())
    assert main(args + ["--threads", "0"]) == 2
