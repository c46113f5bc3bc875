"""Any timm model by name, weights from a local file, and the patch-token contract WCH needs."""
import pytest
import timm
import torch

from hashkern.models import build_backbone, build_model
from hashkern.training.train import TrainConfig, Trainer

SMALL = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def test_a_timm_vit_by_name_loads_a_local_weights_file_and_gives_patch_tokens(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=10, **SMALL)  # with a classifier: ignored
    path = str(tmp_path / "vit.pth")
    torch.save(source.state_dict(), path)
    backbone = build_backbone("timm:vit_tiny_patch16_224", weights=path, **SMALL)
    assert backbone.has_tokens and backbone.dim == 32 and backbone.input_size == 32
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    x = torch.randn(2, 3, 32, 32)
    assert backbone.tokens(x).shape == (2, 16, 32)  # 4 x 4 patches, the class token dropped
    assert backbone(x).shape == (2, 32)
    model = build_model("wch", 8, {"name": "timm:vit_tiny_patch16_224", "weights": path, **SMALL}, hidden=16)
    assert model.encode(x).shape == (2, 8)


def test_a_model_without_patch_tokens_is_refused_with_a_clear_error():
    backbone = build_backbone("timm:resnet18")
    assert not backbone.has_tokens and backbone.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)
    with pytest.raises(ValueError, match="resnet18.* has no patch tokens"):
        backbone.tokens(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="WCH needs a backbone with patch tokens"):
        build_model("wch", 8, {"name": "timm:resnet18"})
    with pytest.raises(ValueError, match="timm has no model named 'no_such_net'"):
        build_backbone("timm:no_such_net")


def test_a_wrong_weights_file_is_refused(tmp_path):
    path = str(tmp_path / "other.pth")
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0, **{**SMALL, "depth": 2}).state_dict(), path)
    with pytest.raises(ValueError, match="unexpected"):
        build_backbone("timm:vit_tiny_patch16_224", weights=path, **SMALL)


def test_train_with_a_timm_backbone_by_name(tmp_path):
    from synthetic_data import tiny_split

    cfg = TrainConfig(method="cibhash", bits=8, epochs=1, batch_size=8, backbone="timm:vit_tiny_patch16_224",
                      backbone_kwargs={**SMALL}, model_kwargs={"hidden": 16}, topk=10)
    trainer = Trainer(cfg, str(tmp_path), split=tiny_split(n_query=1, n_train=1, n_db=1), progress=False,
                      device="cpu")
    assert all(torch.isfinite(torch.tensor(trainer.fit()["loss"])))
