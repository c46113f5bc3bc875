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
    with torch.no_grad():
        assert loaded.tokens(x).shape == (1, 196, 768)
        torch.testing.assert_close(loaded(x), src(x))


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
    bb.train()
    assert not bb.training  # frozen: dropout stays off
    net.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net.classifier[:5](torch.flatten(net.avgpool(net.features(x)), 1))
        torch.testing.assert_close(bb(x), ref)
    assert bb(x).shape == (1, 4096)
    with pytest.raises(ValueError, match="VGG-16 has no patch tokens"):
        bb.tokens(x)
