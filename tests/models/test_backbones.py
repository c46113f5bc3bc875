"""Backbones: shapes, loading local weights (never downloading), clear errors for wrong files."""
import pytest
import torch

from hashkern.models import VGG16Backbone, build_backbone, small_vit, vit_b16


def test_small_vit_tokens_and_features():
    vit = small_vit(in_chans=1, img_size=28, patch_size=7, embed_dim=32, depth=1, num_heads=2)
    x = torch.randn(3, 1, 28, 28)
    assert vit.tokens(x).shape == (3, 16, 32) and vit(x).shape == (3, 32)
    assert vit.has_tokens and vit.dim == 32 and vit.input_size == 28 and vit.num_patches == 16
    rgb = small_vit(in_chans=3, img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2)
    assert rgb(torch.randn(1, 1, 8, 8)).shape == (1, 8)  # grayscale into RGB: channel repeated
    with pytest.raises(ValueError, match="images must have 1 channels, got 3"):
        vit(torch.randn(1, 3, 28, 28))
    avg = small_vit(in_chans=1, img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, pool="avg")
    x8 = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(avg(x8), avg.tokens(x8).mean(1))
    with pytest.raises(ValueError, match="pool must be 'token' or 'avg'"):
        small_vit(pool="max")
    with pytest.raises(ValueError, match="small-vit trains from scratch"):
        build_backbone("small-vit", weights="x.pt")


def test_small_vit_on_cpu_uses_explicit_attention_with_the_fused_result():
    vit = small_vit(in_chans=1, img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2).eval()
    x = torch.randn(3, 1, 28, 28)
    explicit = vit.tokens(x)
    assert not any(block.attn.fused_attn for block in vit.vit.blocks)
    for block in vit.vit.blocks:
        block.attn.fused_attn = True
    fused = vit.vit.forward_features(x)[:, 1:]
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-5)
    many = small_vit(in_chans=1, img_size=36, patch_size=4, embed_dim=8, depth=1, num_heads=2)  # 81 tokens
    many.tokens(torch.randn(1, 1, 36, 36))
    assert many.vit.blocks[0].attn.fused_attn == many._timm_fused


def test_vit_b16_loads_a_timm_state_dict(tmp_path):
    src = vit_b16()
    state = {k: v.clone() for k, v in src.vit.state_dict().items()}
    state["head.weight"], state["head.bias"] = torch.zeros(1000, 768), torch.zeros(1000)  # ignored
    path = tmp_path / "vit.pth"
    torch.save({"model": state}, path)
    loaded = build_backbone("vit-b16", weights=str(path))
    for k, v in src.vit.state_dict().items():
        assert torch.equal(loaded.vit.state_dict()[k], v), k
    x = torch.randn(1, 3, 224, 224)
    loaded.eval(), src.eval()
    with torch.no_grad():
        assert loaded.tokens(x).shape == (1, 196, 768)
        torch.testing.assert_close(loaded(x), src(x))


def test_vit_b16_dropout_is_the_official_configs():
    """Official ViT-B/16 config: dropout_rate 0.1 (after the position embedding, after both MLP layers),
    attention_dropout_rate 0 (attention weights and attention output are not dropped)."""
    vit = vit_b16().vit
    assert vit.pos_drop.p == 0.1
    for block in vit.blocks:
        assert block.mlp.drop1.p == 0.1 and block.mlp.drop2.p == 0.1
        assert isinstance(block.attn.proj_drop, torch.nn.Identity) and block.attn.attn_drop.p == 0.0
    drops = [m for m in vit.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert len(drops) == 1 + 2 * 12
    # in training the dropout is active, in eval mode the output is deterministic
    small = small_vit(in_chans=1, img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, dropout=0.1)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(small.train()(x), small(x))
        assert torch.equal(small.eval()(x), small(x))
    assert build_backbone("vit-b16", dropout=0.0).vit.blocks[0].mlp.drop1.p == 0.0


def test_wrong_weight_files(tmp_path):
    wrong = tmp_path / "small.pt"
    torch.save(small_vit().state_dict(), wrong)
    with pytest.raises(ValueError, match="does not fit ViT-B/16"):
        vit_b16(str(wrong))
    with pytest.raises(ValueError, match="does not fit torchvision VGG-16"):
        VGG16Backbone(str(wrong))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="could not be read as a state dict"):
        vit_b16(str(junk))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        vit_b16(str(tmp_path / "missing.pth"))
    bad_npz = tmp_path / "ViT-B_16.npz"
    import numpy as np
    np.savez(bad_npz, foo=np.zeros(3))
    with pytest.raises(ValueError, match="not a ViT-B/16 .npz checkpoint"):
        vit_b16(str(bad_npz))


def test_vgg16_fc7_from_local_state_dict(tmp_path):
    from torchvision.models import vgg16
    net = vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(net.state_dict(), path)
    bb = VGG16Backbone(str(path))
    assert torch.equal(bb.fc7[3].weight, net.classifier[3].weight)
    assert not any(p.requires_grad for p in bb.parameters())
    # Official CIBHash: frozen weights, the classifier's dropout (p = 0.5 after fc6 and fc7) active in training.
    assert [type(m).__name__ for m in bb.fc7] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout"]
    assert bb.fc7[2].p == 0.5 and bb.fc7[5].p == 0.5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        bb.train()
        assert bb.training and not torch.equal(bb(x), bb(x))
        torch.manual_seed(0)
        got = bb(x)
        torch.manual_seed(0)
        net.train()
        ref = net.classifier[:6](torch.flatten(net.avgpool(net.features(x)), 1))
        torch.testing.assert_close(got, ref)
        bb.eval(), net.eval()
        ref = net.classifier[:5](torch.flatten(net.avgpool(net.features(x)), 1))
        torch.testing.assert_close(bb(x), ref)
    no_dropout = VGG16Backbone(dropout=False)
    no_dropout.train()
    assert not no_dropout.training  # the former behaviour: always eval
    assert bb(x).shape == (2, 4096)
    with pytest.raises(ValueError, match="at least 32×32"):
        bb.check_input("x", torch.randn(1, 3, 16, 16))
    with pytest.raises(TypeError, match="dropout must be a bool"):
        VGG16Backbone(dropout="yes")
    with pytest.raises(TypeError, match="weights must be a path"):
        VGG16Backbone(weights=123)
    with pytest.raises(TypeError, match="weights must be a path"):
        vit_b16(weights=b"ViT-B_16.npz")
    with pytest.raises(ValueError, match="VGG-16 has no patch tokens"):
        bb.tokens(x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(img_size=0), "img_size must be >= 1"),
    (dict(in_chans=0), "in_chans must be >= 1"),
    (dict(img_size=28, patch_size=5), r"patch_size \(5\) must divide img_size \(28\)"),
    (dict(embed_dim=10, num_heads=4), r"num_heads \(4\) must divide embed_dim \(10\)"),
    (dict(depth=0), "depth must be >= 1"),
    (dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
    (dict(dropout=float("nan")), r"dropout must be a number in \[0, 1\)"),
])
def test_small_vit_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_vit(**kwargs)


def test_small_vit_img_size_zero_through_build_backbone():
    with pytest.raises(ValueError, match="img_size must be >= 1"):
        build_backbone("small-vit", img_size=0)
    with pytest.raises(TypeError, match="patch_size must be an int"):
        small_vit(patch_size=4.0)


def test_images_of_the_wrong_size_get_a_clear_error():
    vit = small_vit(in_chans=1, img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"x must be 8×8 images"):
        vit.check_input("x", torch.randn(1, 1, 12, 12))
    with pytest.raises(ValueError, match="x must have 1 channels, got 2"):
        vit.check_input("x", torch.randn(1, 2, 8, 8))


def test_weights_is_a_leaf_that_breaks_the_backbones_registry_circle():
    import ast
    import os

    import hashkern.models as models

    def imported(name):  # the hashkern.models modules a module imports, at any depth of its code
        tree = ast.parse(open(os.path.join(os.path.dirname(models.__file__), f"{name}.py")).read())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and n.module.startswith("hashkern.models")}

    assert imported("weights") == set()
    assert imported("pretrained") == {"hashkern.models.weights"}
    assert {"hashkern.models.weights", "hashkern.models.pretrained"} <= imported("backbones")
