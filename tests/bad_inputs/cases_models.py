"""Bad and valid inputs for the models: WCH, NSH, CIBHash (constructors, ``encode``, ``loss``), the backbones
(``small_vit``, ``ViTBackbone``, ``build_backbone``) and the shallow LSH / ITQ.

Tiny backbones (8×8 images, one block of width 8) keep every case fast. A valid ``encode`` /
``loss`` is compared with the same model run in float64; LSH / ITQ with the NumPy sign of their
projection. The heavy pretrained backbones (ViT-B/16, VGG-16) are only checked for arguments
refused before anything is built.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
from badinput import Case, int_arg_cases, number_arg_cases, tensor_arg_cases

from hashkern.models import ITQ, LSH, NSH, WCH, CIBHash, VGG16Backbone, build_backbone, small_vit, vit_b16

TINY = {"in_chans": 1, "img_size": 8, "patch_size": 4, "embed_dim": 8, "depth": 1, "num_heads": 2}
B = 4
BAD_BOOL = {"str": "no", "int": 1, "None": None}


def _vit():
    torch.manual_seed(0)
    return small_vit(**TINY)


def _images(seed=0, b=B, dtype=torch.float32):
    return torch.randn(b, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


MODELS = {
    "WCH": lambda **kw: {"__fn__": WCH, "backbone": _vit(), "nbits": 8, "hidden": 16, **kw},
    "NSH": lambda **kw: {"__fn__": NSH, "backbone": _vit(), "nbits": 8, "hidden": 16, "latent_dim": 4,
                         "num_positives": 1, "instance_weight": 1.0, **kw},
    "CIBHash": lambda **kw: {"__fn__": CIBHash, "backbone": _vit(), "nbits": 8, "hidden": 16, **kw},
}


def _build(name):
    kwargs = MODELS[name]()
    torch.manual_seed(1)
    return kwargs.pop("__fn__")(**kwargs)


def _float64_loss(name):
    """The loss terms of the model and of its float64 copy, on the same views."""
    def run(tmp, as_double=False):
        model = _build(name)
        v1, v2 = _images(1), _images(2)
        if as_double:
            model, v1, v2 = copy.deepcopy(model).double(), v1.double(), v2.double()
        torch.manual_seed(3)
        out = model.loss(v1, v2)
        return tuple(float(out[k].detach()) for k in sorted(out))
    return Case(f"{name}.loss/view1/valid", run, reference=lambda tmp: run(tmp, True), atol=1e-4)


def _float64_encode(name):
    def run(tmp, as_double=False):
        model = _build(name).eval()
        x = _images(5, b=6)
        if as_double:
            return np.where(copy.deepcopy(model).double().logits(x.double()).detach().numpy() >= 0, 1.0, -1.0)
        return model.encode(x)
    return Case(f"{name}.encode/x/valid", run, reference=lambda tmp: run(tmp, True))


def _method_call(name, method, arg):
    """kwargs of ``model.method`` on a fresh model, with ``arg`` the one the cases replace."""
    def make():
        model = _build(name)
        if method == "encode":
            return {"__fn__": model.encode, "x": _images()}
        return {"__fn__": model.loss, "view1": _images(1), "view2": _images(2)}
    return make


BAD_IMAGES = {"int64": torch.ones(B, 1, 8, 8, dtype=torch.int64), "3-d": torch.ones(1, 8, 8),
              "f64": torch.ones(B, 1, 8, 8, dtype=torch.float64), "other-size": torch.ones(B, 1, 9, 9),
              "2-channels": torch.ones(B, 2, 8, 8), "meta": torch.ones(B, 1, 8, 8, device="meta"),
              "complex": torch.ones(B, 1, 8, 8, dtype=torch.complex64)}


class _NoDim(nn.Module):
    def forward(self, x):
        return x


class _NoTokens(nn.Module):
    dim, has_tokens = 8, False


def _model_cases(name) -> list[Case]:
    make = MODELS[name]
    out = tensor_arg_cases(name, make, "backbone", {"no-dim": _NoDim(), "module-class": lambda kw: _NoTokens})
    out += int_arg_cases(name, make, "nbits", low=1)
    out += int_arg_cases(name, make, "hidden", low=1)
    out += number_arg_cases(name, make, "temperature")
    out += tensor_arg_cases(f"{name}.encode", _method_call(name, "encode", "x"), "x", BAD_IMAGES)
    for view in ("view1", "view2"):
        out += tensor_arg_cases(f"{name}.loss", _method_call(name, "loss", view), view, {
            **BAD_IMAGES, "one-image": torch.ones(1, 1, 8, 8), "other-batch": torch.ones(B + 1, 1, 8, 8)},
            names=(view, "view1 and view2"))
    return out + [_float64_loss(name), _float64_encode(name)]


def _wch_cases() -> list[Case]:
    make = MODELS["WCH"]
    out = [Case("WCH/backbone/no-tokens", lambda tmp: WCH(_NoTokens(), 8), names=("backbone",))]
    for arg in ("weight_temperature", "attention_temperature", "norm_eps"):
        out += number_arg_cases("WCH", make, arg)
    out += number_arg_cases("WCH", make, "balance_weight", positive=False)
    out += [Case("WCH/balance_weight/negative", lambda tmp: WCH(_vit(), 8, balance_weight=-1.0),
                 names=("balance_weight",))]
    out += tensor_arg_cases("WCH", make, "clamp_weights", BAD_BOOL)[5:]
    for arg in ("weight_norm", "balance_on", "head_init"):
        out += tensor_arg_cases("WCH", make, arg, {"bogus": "bogus", "None": None})[5:]
    return out


def _nsh_cases() -> list[Case]:
    make = MODELS["NSH"]
    out = int_arg_cases("NSH", make, "latent_dim", low=1) + int_arg_cases("NSH", make, "num_positives", low=1)
    out += [c for c in number_arg_cases("NSH", make, "sort_temperature") if not c.id.endswith("/None")]
    out += number_arg_cases("NSH", make, "instance_weight", positive=False)
    out.append(Case("NSH.loss/view1/batch-not-above-num_positives", lambda tmp: _build_with(
        "NSH", num_positives=4).loss(_images(1), _images(2)), names=("num_positives", "batch")))
    return out


def _cibhash_cases() -> list[Case]:
    make = MODELS["CIBHash"]
    out = number_arg_cases("CIBHash", make, "kl_weight", positive=False)
    out += tensor_arg_cases("CIBHash", make, "stochastic", BAD_BOOL)[5:]
    out += tensor_arg_cases("CIBHash", make, "kl", {"bogus": "half", "None": None})[5:]
    return out


def _build_with(name, **kw):
    kwargs = MODELS[name](**kw)
    return kwargs.pop("__fn__")(**kwargs)


def _backbone_cases() -> list[Case]:
    vit = lambda: {"__fn__": small_vit, **TINY}  # noqa: E731
    out = []
    for arg in TINY:
        out += int_arg_cases("small_vit", vit, arg, low=1)
    out += [Case("small_vit/patch_size/not-dividing", lambda tmp: small_vit(**{**TINY, "patch_size": 3}),
                 names=("patch_size",)),
            Case("small_vit/num_heads/not-dividing", lambda tmp: small_vit(**{**TINY, "num_heads": 3}),
                 names=("num_heads",))]
    out += tensor_arg_cases("small_vit", vit, "pool", {"bogus": "max", "None": None})[5:]
    out += [Case(f"small_vit/dropout/{v!r}", lambda tmp, v=v: small_vit(**TINY, dropout=v), names=("dropout",))
            for v in (1.0, -0.1, float("nan"), "0.1", True)]
    out += [Case(f"build_backbone/name/{v!r}", lambda tmp, v=v: build_backbone(v), names=("backbone", "name"))
            for v in ("resnet", None, "Small-ViT")]
    out += [Case("build_backbone/weights/small-vit", lambda tmp: build_backbone("small-vit", weights="w.pt"),
                 names=("weights",)),
            Case("build_backbone/dropout/vit-b16-extra", lambda tmp: build_backbone("vit-b16", depth=2),
                 names=("backbone arguments",)),
            Case("vit_b16/weights/int", lambda tmp: vit_b16(weights=3), names=("weights",)),
            Case("vit_b16/dropout/1.5", lambda tmp: vit_b16(dropout=1.5), names=("dropout",))]
    out += [Case(f"VGG16Backbone/{arg}/{v!r}", lambda tmp, a=arg, v=v: VGG16Backbone(**{a: v}), names=(arg,))
            for arg in ("frozen", "dropout") for v in ("no", 1)]
    out.append(Case("VGG16Backbone/weights/list", lambda tmp: VGG16Backbone(weights=["w.pt"]), names=("weights",)))
    return out


# ---- LSH / ITQ ----

FEATURES = np.random.default_rng(5).standard_normal((12, 6))


def _np_sign_projection(model, x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.where((x - model.mean.numpy()) @ model.projection.numpy() >= 0, 1.0, -1.0)


def _shallow_cases() -> list[Case]:
    out = []
    for cls, extra in ((LSH, {}), (ITQ, {"iterations": 3})):
        name = cls.__name__
        make = lambda cls=cls, extra=extra: {"__fn__": cls, "nbits": 4, **extra}  # noqa: E731
        out += int_arg_cases(name, make, "nbits", low=1)
        out += int_arg_cases(name, make, "seed", low=None)[:4]  # not ints (None: a fresh seed is not offered)
        if cls is ITQ:
            out += int_arg_cases(name, make, "iterations", low=0)
        fit = lambda cls=cls, extra=extra: {  # noqa: E731
            "__fn__": cls(4, **extra).fit, "x": torch.from_numpy(FEATURES)}
        out += tensor_arg_cases(f"{name}.fit", fit, "x", {
            "complex": torch.ones(12, 6, dtype=torch.complex64), "1-d": torch.ones(6), "3-d": torch.ones(12, 2, 3),
            "no-rows": torch.ones(0, 6), "no-features": torch.ones(12, 0),
            "nan": torch.full((12, 6), float("nan")), "inf": torch.full((12, 6), float("inf"))})

        def encode_kwargs(cls=cls, extra=extra):
            model = cls(4, **extra).fit(torch.from_numpy(FEATURES))
            return {"__fn__": model.encode, "x": torch.from_numpy(FEATURES)}
        out += tensor_arg_cases(f"{name}.encode", encode_kwargs, "x", {
            "other-d": torch.ones(3, 7), "complex": torch.ones(3, 6, dtype=torch.complex64),
            "1-d": torch.ones(6), "nan": torch.full((3, 6), float("nan"))})
        for form, x in (("features-f32", torch.from_numpy(FEATURES).float()),
                        ("features-1e150", torch.from_numpy(FEATURES * 1e150)),
                        ("features-bool", torch.from_numpy(FEATURES > 0)),
                        ("images-uint8", torch.from_numpy((np.abs(FEATURES) * 40).astype(np.uint8)).view(12, 1, 2, 3))):
            model_box = {}

            def run(tmp, cls=cls, extra=extra, x=x, box=model_box):
                box["model"] = cls(4, **extra).fit(x)
                return box["model"].encode(x)
            out.append(Case(f"{name}.encode/x/valid-{form}", run, reference=lambda tmp, x=x, box=model_box:
                            _np_sign_projection(box["model"], x.double().numpy())))
    return out


def cases() -> list[Case]:
    out = []
    for name in MODELS:
        out += _model_cases(name)
    return out + _wch_cases() + _nsh_cases() + _cibhash_cases() + _backbone_cases() + _shallow_cases()
