"""WCH, NSH and CIBHash: the loss equals the methods' formulas (float64), gradients reach every part,
encode gives ±1 codes, odd shapes, bad input."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hashkern.models import CIBHash, NSH, WCH, build_model, small_vit
from hashkern.models.cibhash import bernoulli_kl


def tiny_vit(in_chans=1, size=8):
    return small_vit(in_chans=in_chans, img_size=size, patch_size=4, embed_dim=16, depth=1, num_heads=2)


class FeatureBackbone(nn.Module):
    """A linear 'backbone' without tokens (like VGG-16 fc7)."""
    has_tokens = False

    def __init__(self, dim=12, in_features=64):
        super().__init__()
        self.lin, self.dim, self.input_size = nn.Linear(in_features, dim), dim, 8

    def forward(self, x):
        return self.lin(x.flatten(1))


def _views(b, c=1, s=8, dtype=torch.float32):
    x = torch.randn(b, c, s, s, dtype=dtype)
    return x, x + 0.3 * torch.randn_like(x)


def _sign(x):
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def wch_loss_formula(model, v1, v2):
    """DESIGN.md's WCH, written out: mutual attention, MaxSim aggregation, weights, soft-target CE, balance."""
    t1, t2 = model.backbone.tokens(v1), model.backbone.tokens(v2)
    n1, n2 = F.normalize(t1, dim=-1), F.normalize(t2, dim=-1)
    T = model.attention_temperature
    a1 = torch.softmax(n2 @ n1.transpose(1, 2) / T, dim=-1) @ t1  # X1'[n, j] attends over X1[n, i]
    a2 = torch.softmax(n1 @ n2.transpose(1, 2) / T, dim=-1) @ t2
    c1, c2 = F.normalize(a1, dim=-1), F.normalize(a2, dim=-1)
    b = t1.shape[0]
    s = torch.stack([torch.stack([(c1[n] @ c2[m].T).max(dim=1).values.mean() for m in range(b)]) for n in range(b)])
    u1, u2 = model._codes(a1), model._codes(a2)
    h1, h2 = _sign(u1), _sign(u2)
    d = s - s.diagonal()[:, None]
    W = torch.exp((d.clamp(max=0) if model.distill.clamp_weights else d) / model.distill.weight_temperature)
    logits = h1 @ h2.T / h1.shape[1] / model.distill.temperature
    distill = -(W * logits.log_softmax(1)).sum(1).mean()
    balance = u1.mean(0).pow(2).mean() - u1.pow(2).mean()
    return distill + model.balance_weight * balance


def instance_formula(z1, z2, temperature):
    """NT-Xent over the 2n latents, written as -log(e^{cos(i, partner)/T} / sum_{k != i} e^{cos(i, k)/T})."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim, n2 = z @ z.T / temperature, z.shape[0]
    return torch.stack([-(sim[i, (i + n2 // 2) % n2] - torch.logsumexp(sim[i][torch.arange(n2) != i], 0))
                        for i in range(n2)]).mean()


def nsh_loss_formula(model, v1, v2):
    """DESIGN.md's SortedNCE with explicit P [n, n, n] and E [n, n, dz], plus instance_weight × NT-Xent(z1, z2)."""
    (b1, z1), (b2, z2) = model._forward(v1), model._forward(v2)
    K = b1.shape[1]
    S = (b1 @ b2.T + K) / (2 * K)
    sorted_s = S.sort(dim=1, descending=True).values
    P = torch.softmax(-(sorted_s[:, :, None] - S[:, None, :]).abs() / model.sorted_nce.sort_temperature, dim=2)
    E = torch.einsum("ikj,jd->ikd", P, z1)
    c = F.cosine_similarity(E, z2[:, None, :], dim=2) / model.sorted_nce.temperature
    m = model.num_positives
    neg = torch.logsumexp(c[:, m:], dim=1, keepdim=True)
    sorted_nce = (torch.logaddexp(c[:, :m], neg) - c[:, :m]).mean()
    return sorted_nce + model.instance_weight * instance_formula(z1, z2, model.sorted_nce.temperature)


@pytest.mark.parametrize("b,nbits", [(5, 7), (2, 1)])
def test_wch_loss_matches_formula(b, nbits):
    model = WCH(tiny_vit(), nbits, hidden=8, balance_weight=0.5).double()
    v1, v2 = _views(b, dtype=torch.float64)
    out = model.loss(v1, v2)
    torch.testing.assert_close(out["loss"], wch_loss_formula(model, v1, v2), rtol=1e-6, atol=1e-8)
    assert set(out) == {"loss", "distill", "balance"}


@pytest.mark.parametrize("b,nbits,m,instance_weight", [(5, 7, 2, 1.0), (3, 1, 1, 0.0), (4, 5, 3, 0.5)])
def test_nsh_loss_matches_formula(b, nbits, m, instance_weight):
    model = NSH(tiny_vit(), nbits, latent_dim=3, num_positives=m, hidden=8, instance_weight=instance_weight).double()
    v1, v2 = _views(b, dtype=torch.float64)
    out = model.loss(v1, v2)
    torch.testing.assert_close(out["loss"], nsh_loss_formula(model, v1, v2), rtol=1e-6, atol=1e-8)
    assert set(out) == ({"loss"} if instance_weight == 0 else {"loss", "sorted_nce", "instance"})


def test_cibhash_loss_matches_formula():
    model = CIBHash(FeatureBackbone(), 6, temperature=0.5, kl_weight=0.1, stochastic=False, hidden=8).double()
    v1, v2 = _views(4, dtype=torch.float64)
    p1, p2 = torch.sigmoid(model.logits(v1)), torch.sigmoid(model.logits(v2))
    b1, b2 = _sign(p1 - 0.5), _sign(p2 - 0.5)
    z = F.normalize(torch.cat([b1, b2]), dim=1)
    sim = z @ z.T / 0.5
    n = 4
    nll = [-(sim[i, (i + n) % (2 * n)] - torch.logsumexp(sim[i][torch.arange(2 * n) != i], 0)) for i in range(2 * n)]
    kl = 0.5 * (bernoulli_kl(p1, p2) + bernoulli_kl(p2, p1))
    torch.testing.assert_close(model.loss(v1, v2)["loss"], torch.stack(nll).mean() + 0.1 * kl)


def test_bernoulli_kl_matches_torch_distributions():
    p, q = torch.rand(5, 3, dtype=torch.float64) * 0.98 + 0.01, torch.rand(5, 3, dtype=torch.float64) * 0.98 + 0.01
    ref = torch.distributions.kl_divergence(torch.distributions.Bernoulli(p), torch.distributions.Bernoulli(q))
    torch.testing.assert_close(bernoulli_kl(p, q), ref.sum(1).mean())
    assert bernoulli_kl(p, p).abs() < 1e-12


@pytest.mark.parametrize("method", ["wch", "nsh", "cibhash"])
def test_gradients_reach_backbone_and_head(method):
    model = build_model(method, 5, {"name": "small-vit", "in_chans": 3, "img_size": 8, "patch_size": 4,
                                    "embed_dim": 16, "depth": 1, "num_heads": 2}, hidden=8)
    v1, v2 = _views(6, c=3)
    out = model(v1, v2)  # forward is loss (what DDP wraps)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in model.named_parameters():
        if "cls_token" in name:  # the CLS token only feeds the pooled feature, unused by WCH
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0
    codes = model.eval().encode(v1)
    assert codes.shape == (6, 5) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert codes.dtype == torch.float32


def test_encode_is_sign_of_logits_and_cibhash_stochastic_only_in_training():
    model = CIBHash(FeatureBackbone(), 9, hidden=8)
    x = torch.randn(7, 1, 8, 8)
    torch.testing.assert_close(model.encode(x), _sign(model.logits(x)))
    model.train()
    torch.manual_seed(0)
    a = model.loss(*_views(7))
    v = _views(7)
    torch.manual_seed(1)
    l1 = model.loss(*v)["loss"]
    torch.manual_seed(2)
    l2 = model.loss(*v)["loss"]
    assert not torch.equal(l1, l2)  # sign(p - u), u ~ U(0, 1)
    model.eval()
    assert torch.equal(model.loss(*v)["loss"], model.loss(*v)["loss"])
    assert torch.isfinite(a["loss"])


def test_bad_input():
    with pytest.raises(ValueError, match="WCH needs a backbone with patch tokens"):
        WCH(FeatureBackbone(), 8)
    with pytest.raises(TypeError, match="backbone must be an nn.Module"):
        NSH("vit", 8)
    with pytest.raises(ValueError, match="nbits must be >= 1"):
        CIBHash(FeatureBackbone(), 0)
    with pytest.raises(TypeError, match="nbits must be an int"):
        CIBHash(FeatureBackbone(), 8.0)
    model = NSH(FeatureBackbone(), 4, num_positives=3, hidden=8)
    with pytest.raises(ValueError, match="must be larger than num_positives"):
        model.loss(*_views(3))
    with pytest.raises(ValueError, match="view1 and view2 must have the same shape"):
        model.loss(torch.randn(4, 1, 8, 8), torch.randn(5, 1, 8, 8))
    with pytest.raises(ValueError, match="at least 2 images"):
        model.loss(*_views(1))
    with pytest.raises(ValueError, match="view1 must be 4-D"):
        model.loss(torch.randn(4, 64), torch.randn(4, 64))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        model.encode(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="instance_weight must be a number >= 0"):
        NSH(FeatureBackbone(), 4, hidden=8, instance_weight=-1.0)
    with pytest.raises(ValueError, match="unknown method 'dsh'"):
        build_model("dsh", 8, {"name": "small-vit"})
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        build_model("nsh", 8, {"name": "resnet"})


def test_nsh_sort_temperature_follows_code_length():
    assert NSH(FeatureBackbone(), 16, hidden=8).sorted_nce.sort_temperature == pytest.approx(0.02)
    assert NSH(FeatureBackbone(), 64, hidden=8).sorted_nce.sort_temperature == pytest.approx(0.005)
    assert NSH(FeatureBackbone(), 64, hidden=8, sort_temperature=0.1).sorted_nce.sort_temperature == 0.1
