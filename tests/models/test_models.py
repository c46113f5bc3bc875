"""WCH, NSH and CIBHash: the loss equals the methods' formulas (float64), gradients reach every part,
encode gives ±1 codes, odd shapes, bad input."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hashkern.models import NSH, WCH, CIBHash, build_model, small_vit
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
    P = torch.softmax(s / model.distill.weight_temperature, dim=1)
    W = P / (P.diagonal()[None, :] if model.distill.weight_norm == "column" else P.diagonal()[:, None])
    if model.distill.clamp_weights:
        W = W.clamp(max=1)
    logits = h1 @ h2.T / h1.shape[1] / model.distill.temperature
    distill = -(W * logits.log_softmax(1)).sum(1).mean()
    on = h1 if model.balance_on == "codes" else u1
    balance = on.mean(0).pow(2).mean() - on.pow(2).mean()
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
    tau = model.sorted_nce.sort_temperature or 0.32 / K  # None: SortedNCE's default, 0.32 / K
    P = torch.softmax(-(sorted_s[:, :, None] - S[:, None, :]).abs() / tau, dim=2)
    E = torch.einsum("ikj,jd->ikd", P, z1)
    c = F.cosine_similarity(E, z2[:, None, :], dim=2) / model.sorted_nce.temperature
    m = model.num_positives
    neg = torch.logsumexp(c[:, m:], dim=1, keepdim=True)
    sorted_nce = (torch.logaddexp(c[:, :m], neg) - c[:, :m]).mean()
    return sorted_nce + model.instance_weight * instance_formula(z1, z2, model.sorted_nce.temperature)


@pytest.mark.parametrize("options", [{}, dict(weight_norm="row", clamp_weights=True, balance_on="tanh",
                                              balance_weight=0.5, head_init="torch", norm_eps=1e-5)])
@pytest.mark.parametrize("b,nbits", [(5, 7), (2, 1)])
def test_wch_loss_matches_formula(b, nbits, options):
    model = WCH(tiny_vit(), nbits, hidden=8, **options).double()
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


@pytest.mark.parametrize("kl", ["official", "full"])
def test_cibhash_loss_matches_formula(kl):
    model = CIBHash(FeatureBackbone(), 6, temperature=0.5, kl_weight=0.1, hidden=8, kl=kl).double()
    v1, v2 = _views(4, dtype=torch.float64)
    p1, p2 = torch.sigmoid(model.logits(v1)), torch.sigmoid(model.logits(v2))
    # deterministic codes by default, in training too, with a straight-through gradient
    b1, b2 = ((p - 0.5) + (_sign(p - 0.5) - (p - 0.5)).detach() for p in (p1, p2))
    z = F.normalize(torch.cat([b1, b2]), dim=1)
    sim = z @ z.T / 0.5
    n = 4
    nll = [-(sim[i, (i + n) % (2 * n)] - torch.logsumexp(sim[i][torch.arange(2 * n) != i], 0)) for i in range(2 * n)]
    if kl == "official":  # KL(p || q) with q detached and log(x + 1e-8) (zexuanqiu/CIBHash compute_kl)
        def one(p, q):
            q = q.detach()
            return (p * ((p + 1e-8).log() - (q + 1e-8).log())
                    + (1 - p) * ((1 - p + 1e-8).log() - (1 - q + 1e-8).log())).sum(1).mean()
        kl_value = 0.5 * (one(p1, p2) + one(p2, p1))
    else:
        kl_value = 0.5 * (bernoulli_kl(p1, p2) + bernoulli_kl(p2, p1))
    want = torch.stack(nll).mean() + 0.1 * kl_value
    model.train()
    got = model.loss(v1, v2)["loss"]
    torch.testing.assert_close(got, want)
    params = list(model.head.parameters())
    for g, w in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_official_kl_gradient_reaches_the_first_argument_only():
    """The official KL detaches its second argument: the gradient is the closed form of d/dp KL(p || q)
    with q fixed (log(x + 1e-8) everywhere), and nothing reaches q."""
    from hashkern.models.cibhash import official_bernoulli_kl
    p = (torch.rand(3, 5, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    q = (p.detach() + 0.05 * torch.randn(3, 5, dtype=torch.float64)).clamp(0.05, 0.95).requires_grad_()
    (g_off,) = torch.autograd.grad(official_bernoulli_kl(p, q), p)
    # closed form of d/dp KL(p || q) with q fixed, log(x + 1e-8) as the official code: per sample / batch size
    e = 1e-8
    pd, qd = p.detach(), q.detach()
    want = (torch.log(pd + e) - torch.log(qd + e) + pd / (pd + e)
            - torch.log(1 - pd + e) + torch.log(1 - qd + e) - (1 - pd) / (1 - pd + e)) / pd.shape[0]
    torch.testing.assert_close(g_off, want)
    assert official_bernoulli_kl(p, q).grad_fn is not None
    (gq,) = torch.autograd.grad(official_bernoulli_kl(p, q), q, allow_unused=True)
    assert gq is None


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
    model = CIBHash(FeatureBackbone(), 9, hidden=8, stochastic=True)
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
    official = CIBHash(FeatureBackbone(), 9, hidden=8).train()  # default: deterministic sign(p - 1/2)
    assert not official.stochastic
    torch.manual_seed(1)
    l1 = official.loss(*v)["loss"]
    torch.manual_seed(2)
    assert torch.equal(l1, official.loss(*v)["loss"])


def test_bad_input():
    with pytest.raises(ValueError, match="WCH needs a backbone with patch tokens"):
        WCH(FeatureBackbone(), 8)
    with pytest.raises(TypeError, match="backbone must be an nn.Module"):
        NSH("vit", 8)
    with pytest.raises(TypeError, match="backbone must expose its feature size"):
        CIBHash(nn.Linear(4, 4), 8)
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
    with pytest.raises(ValueError, match="instance_weight must be a finite number >= 0"):
        NSH(FeatureBackbone(), 4, hidden=8, instance_weight=-1.0)
    with pytest.raises(ValueError, match="unknown method 'dsh'"):
        build_model("dsh", 8, {"name": "small-vit"})
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        build_model("nsh", 8, {"name": "resnet"})


def test_nsh_defaults_are_the_papers_loss():
    """No NT-Xent term by default, and the sort temperature is SortedNCELoss's own default."""
    from hashkern.losses import SortedNCELoss
    model = NSH(FeatureBackbone(), 16, hidden=8)
    assert model.instance_weight == 0.0
    assert model.sorted_nce.sort_temperature == SortedNCELoss(4).sort_temperature
    assert model.sorted_nce.temperature == SortedNCELoss(4).temperature
    assert NSH(FeatureBackbone(), 64, hidden=8, sort_temperature=0.005).sorted_nce.sort_temperature == 0.005
    v1, v2 = _views(6, dtype=torch.float64)
    model = model.double()
    out = model.loss(v1, v2)
    assert set(out) == {"loss"}
    want = nsh_loss_formula(model, v1, v2)
    torch.testing.assert_close(out["loss"], want, rtol=1e-6, atol=1e-8)
    params = [p for p in model.parameters() if p.requires_grad]
    for g, w in zip(torch.autograd.grad(out["loss"], params, allow_unused=True),
                    torch.autograd.grad(want, params, allow_unused=True)):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("make,match,error", [
    (lambda: WCH(tiny_vit(), 8, hidden=0), "hidden must be >= 1", ValueError),
    (lambda: NSH(FeatureBackbone(), 8, hidden=-3), "hidden must be >= 1", ValueError),
    (lambda: CIBHash(FeatureBackbone(), 8, hidden=0), "hidden must be >= 1", ValueError),
    (lambda: CIBHash(FeatureBackbone(), 8, hidden=8.0), "hidden must be an int", TypeError),
    (lambda: CIBHash(FeatureBackbone(), 8, stochastic="no"), "stochastic must be a bool", TypeError),
    (lambda: CIBHash(FeatureBackbone(), 8, kl="symmetric"), "kl must be one of", ValueError),
    (lambda: CIBHash(FeatureBackbone(), 8, kl_weight=float("nan")), "kl_weight must be a finite number >= 0",
     ValueError),
    (lambda: CIBHash(FeatureBackbone(), 8, kl_weight=float("inf")), "kl_weight must be a finite number >= 0",
     ValueError),
    (lambda: CIBHash(FeatureBackbone(), 8, temperature=-1.0), "temperature must be a finite number > 0", ValueError),
    (lambda: WCH(tiny_vit(), 8, balance_weight=float("nan")), "balance_weight must be a finite number >= 0",
     ValueError),
    (lambda: WCH(tiny_vit(), 8, balance_weight="1"), "balance_weight must be a number", TypeError),
    (lambda: WCH(tiny_vit(), 8, balance_on="logits"), "balance_on must be one of", ValueError),
    (lambda: WCH(tiny_vit(), 8, head_init="xavier"), "head_init must be one of", ValueError),
    (lambda: WCH(tiny_vit(), 8, weight_norm="both"), "weight_norm must be one of", ValueError),
    (lambda: WCH(tiny_vit(), 8, norm_eps=0.0), "norm_eps must be a finite number > 0", ValueError),
    (lambda: NSH(FeatureBackbone(), 8, instance_weight=float("inf")),
     "instance_weight must be a finite number >= 0", ValueError),
])
def test_constructors_refuse_bad_arguments(make, match, error):
    with pytest.raises(error, match=match):
        make()


def test_encode_and_loss_refuse_images_the_backbone_cannot_take():
    model = WCH(tiny_vit(), 8, hidden=8)
    with pytest.raises(ValueError, match="x must be 8×8 images"):
        model.encode(torch.randn(2, 1, 12, 12))
    with pytest.raises(ValueError, match="x must have 1 channels, got 2"):
        model.encode(torch.randn(2, 2, 8, 8))
    with pytest.raises(TypeError, match="x must have the model's dtype torch.float32"):
        model.encode(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="view1 must be 8×8 images"):
        model.loss(torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="x must be on the model's device"):
        model.encode(torch.randn(2, 1, 8, 8, device="meta"))
