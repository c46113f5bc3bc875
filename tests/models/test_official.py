"""WCH and CIBHash against this file's own float64 transcription of the official training steps
(RosieYuu/WCH ``train_forward`` + ``CL``; zexuanqiu/CIBHash ``forward``), written from their semantics:
same weights, same inputs -> same loss and the same gradient for every parameter."""
import math

import pytest
import torch
import torch.nn.functional as F

from hashkern.models import WCH, CIBHash, small_vit
from hashkern.models.base import mlp_head
from tests.models.test_models import FeatureBackbone, _views


def _layer_norm(x, norm, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, eps)


def official_vit_tokens(vit, x):
    """The official ViT (patch conv, CLS, position embedding, pre-norm blocks with LayerNorm eps 1e-6,
    q/k/v attention scaled by 1/sqrt(head dim), GELU MLP, final LayerNorm) on timm's parameters, in
    eval mode (dropout off); returns the patch tokens without the CLS token."""
    pe = vit.patch_embed.proj
    x = F.conv2d(x, pe.weight, pe.bias, stride=pe.stride).flatten(2).transpose(1, 2)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + vit.pos_embed
    for block in vit.blocks:
        heads, dim = block.attn.num_heads, x.shape[-1]
        h = x
        y = _layer_norm(x, block.norm1)
        q, k, v = F.linear(y, block.attn.qkv.weight, block.attn.qkv.bias).split(dim, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, dim // heads)).transpose(1, 2) for t in (q, k, v))
        scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)
        ctx = (scores @ v).transpose(1, 2).flatten(2)
        x = F.linear(ctx, block.attn.proj.weight, block.attn.proj.bias) + h
        h = x
        y = F.gelu(F.linear(_layer_norm(x, block.norm2), block.mlp.fc1.weight, block.mlp.fc1.bias))
        x = F.linear(y, block.mlp.fc2.weight, block.mlp.fc2.bias) + h
    return _layer_norm(x, vit.norm)[:, 1:]


def official_wch_step(model, img1, img2):
    """WCH's train_forward and CL loss, written out."""
    x1, x2 = official_vit_tokens(model.backbone.vit, img1), official_vit_tokens(model.backbone.vit, img2)
    # cross attention, T = 1: view-1 tokens re-weighted by their similarity to each view-2 token and back
    sim = torch.einsum("nid,njd->nij", F.normalize(x1, dim=-1), F.normalize(x2, dim=-1))
    a1 = torch.softmax(sim.transpose(1, 2), dim=-1) @ x1  # row j: sum_i softmax_i(sim[n, i, j]) x1[n, i]
    a2 = torch.softmax(sim, dim=-1) @ x2
    # weights: mean over i of max over j of the cosines between images n and m; softmax / 0.2;
    # the official broadcasting divides column m by P[m, m]
    pair = torch.einsum("nid,mjd->nmij", F.normalize(a1, dim=-1), F.normalize(a2, dim=-1))
    P = torch.softmax(pair.max(-1).values.mean(-1) / 0.2, dim=-1)
    W = P / P.diagonal()[None, :]
    norm, fc, _, out = model.head

    def hash_head(a):
        u = torch.tanh(F.linear(F.relu(F.linear(_layer_norm(a.mean(1), norm), fc.weight, fc.bias)),
                                out.weight, out.bias))
        return u + (torch.sign(u) - u).detach()

    h1, h2 = hash_head(a1), hash_head(a2)
    logits = h1 @ h2.T / h1.shape[1] / 0.3
    ce = -(W * torch.log_softmax(logits, dim=1)).sum(1).mean()  # cross-entropy with probability targets
    reg = h1.mean(0).pow(2).mean() - h1.pow(2).mean()  # weight 1.0, on the sign codes
    return ce + reg


def official_cibhash_step(model, img1, img2, temperature=0.3, weight=0.001):
    """CIBHash's forward: sign(p - 0.5) codes (straight-through), NT-Xent (cross-entropy summed over the
    2N rows, divided by 2N), KL with the second argument detached and log(x + 1e-8)."""
    lin1, _, lin2 = model.head

    def encode(img):
        feats = model.backbone(img)
        p = torch.sigmoid(F.linear(F.relu(F.linear(feats, lin1.weight, lin1.bias)), lin2.weight, lin2.bias))
        return p, (p - 0.5) + (torch.sign(p - 0.5) - (p - 0.5)).detach()

    def kl(p, q):
        q = q.detach()
        t = p * (torch.log(p + 1e-8) - torch.log(q + 1e-8)) \
            + (1 - p) * (torch.log(1 - p + 1e-8) - torch.log(1 - q + 1e-8))
        return t.sum(1).mean()

    (pi, zi), (pj, zj) = encode(img1), encode(img2)
    n = zi.shape[0]
    z = torch.cat([zi, zj])
    sim = F.cosine_similarity(z[:, None, :], z[None, :, :], dim=2) / temperature
    positives = torch.cat([sim.diagonal(n), sim.diagonal(-n)])[:, None]
    keep = ~torch.eye(2 * n, dtype=torch.bool)
    keep[torch.arange(n), torch.arange(n) + n] = False
    keep[torch.arange(n) + n, torch.arange(n)] = False
    logits = torch.cat([positives, sim[keep].view(2 * n, -1)], dim=1)
    contra = F.cross_entropy(logits, torch.zeros(2 * n, dtype=torch.long), reduction="sum") / (2 * n)
    return contra + weight * (kl(pi, pj) + kl(pj, pi)) / 2


def _compare(model, reference_step, loss_rtol, grad_rtol, dtype, b=6):
    """Loss and every parameter gradient of ``model`` (in ``dtype``) against the float64 transcription."""
    torch.manual_seed(5)
    v1, v2 = _views(b, c=model.backbone.in_chans if hasattr(model.backbone, "in_chans") else 1, dtype=torch.float64)
    ref_model = model.double().train()  # training mode, as the official steps run (these backbones have no dropout)
    names = [n for n, p in ref_model.named_parameters() if p.requires_grad]
    want = reference_step(ref_model, v1, v2)
    want_grads = torch.autograd.grad(want, [dict(ref_model.named_parameters())[n] for n in names], allow_unused=True)
    got_model = model.to(dtype)
    got = got_model.loss(v1.to(dtype), v2.to(dtype))["loss"]
    params = dict(got_model.named_parameters())
    got_grads = torch.autograd.grad(got, [params[n] for n in names], allow_unused=True)
    loss_err = abs(got.item() - want.item()) / abs(want.item())
    worst = 0.0
    for name, g, w in zip(names, got_grads, want_grads):
        if w is None:  # e.g. the CLS token, which feeds no patch token
            assert g is None or not g.abs().any(), name
            continue
        err = ((g.double() - w).norm() / w.norm().clamp(min=1e-300)).item()
        worst = max(worst, err)
        assert err <= grad_rtol, f"{name}: relative gradient error {err:.2e}"
    assert loss_err <= loss_rtol, f"relative loss error {loss_err:.2e}"
    return loss_err, worst


def _tiny_wch(nbits=16):
    torch.manual_seed(0)
    vit = small_vit(in_chans=1, img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2)
    return WCH(vit, nbits, hidden=32)


@pytest.mark.parametrize("dtype,loss_rtol,grad_rtol", [(torch.float64, 1e-12, 1e-10), (torch.float32, 1e-6, 1e-5)])
def test_wch_step_equals_the_official_step(dtype, loss_rtol, grad_rtol):
    _compare(_tiny_wch(), official_wch_step, loss_rtol, grad_rtol, dtype)


@pytest.mark.parametrize("dtype,loss_rtol,grad_rtol", [(torch.float64, 1e-12, 1e-10), (torch.float32, 1e-6, 1e-5)])
def test_cibhash_step_equals_the_official_step(dtype, loss_rtol, grad_rtol):
    torch.manual_seed(0)
    model = CIBHash(FeatureBackbone(dim=24), 16, hidden=32)
    _compare(model, official_cibhash_step, loss_rtol, grad_rtol, dtype)


def test_wch_head_init_and_layernorm_eps():
    """kaiming_uniform(mode="fan_out") is U(-b, b) with b = sqrt(2) * sqrt(3 / fan_out), fan_out = out features;
    biases N(0, 1); LayerNorm eps 1e-6."""
    torch.manual_seed(0)
    model = _tiny_wch(nbits=16)
    torch.manual_seed(0)
    small_vit(in_chans=1, img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2)  # same RNG draws
    norm = torch.nn.LayerNorm(16)
    fc, out = torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)  # PyTorch's init draws first, then overwritten
    with torch.no_grad():
        for layer in (fc, out):
            bound = math.sqrt(2.0) * math.sqrt(3.0 / layer.weight.shape[0])
            layer.weight.uniform_(-bound, bound)
            layer.bias.normal_(0.0, 1.0)
    head = model.head
    assert head[0].eps == 1e-6 and torch.equal(head[0].weight, norm.weight)
    for got, want in ((head[1], fc), (head[3], out)):
        assert torch.equal(got.weight, want.weight) and torch.equal(got.bias, want.bias)
    torch_init = mlp_head(16, 8, 32, norm=True, init="torch")
    assert torch_init[0].eps == 1e-5 and torch_init[3].bias.abs().max() <= 1 / math.sqrt(32)


@pytest.mark.parametrize("option", [dict(weight_norm="row"), dict(balance_on="tanh"), dict(balance_weight=0.1)])
def test_wch_options_leave_the_official_step(option):
    """Each of this library's options changes the loss: the comparison above is not blind to them."""
    torch.manual_seed(0)
    vit = small_vit(in_chans=1, img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2)
    model = WCH(vit, 16, hidden=32, **option).double().eval()
    torch.manual_seed(5)
    v1, v2 = _views(6, dtype=torch.float64)
    with torch.no_grad():
        assert abs(model.loss(v1, v2)["loss"].item() - official_wch_step(model, v1, v2).item()) > 1e-4
