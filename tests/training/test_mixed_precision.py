"""--precision: bf16 / fp16 autocast trains every method with finite losses close to fp32's."""
import math

import pytest
import torch
from synthetic_data import tiny_split

from hashkern.training.checkpoint import load_checkpoint
from hashkern.training.train import TrainConfig, Trainer

TINY_VIT = {"patch_size": 7, "embed_dim": 16, "depth": 1, "num_heads": 2}
# The first loss of a batch under bf16 autocast stays within this relative distance of fp32's
# (bf16 keeps 8 mantissa bits: ~0.4 % per rounding; measured on CPU: NSH 0.14 %).
BF16_TOLERANCE = 0.01


def _cfg(method, **kw):
    # NSH's sorted-contrast term sits at ln(b - 1) on a model this small; its instance term moves
    extra = {"hidden": 16, "latent_dim": 8, "num_positives": 2, "instance_weight": 1.0} if method == "nsh" \
        else {"hidden": 16}
    return TrainConfig(method=method, bits=8, epochs=1, batch_size=8, lr=1e-3, topk=10, seed=3,
                       backbone_kwargs=TINY_VIT, model_kwargs=extra, **kw)


@pytest.fixture(scope="module")
def split():
    return tiny_split(n_query=1, n_train=3, n_db=3)  # 30 training images: 3 steps of 8


@pytest.mark.parametrize("method", ["nsh", "wch", "cibhash"])
def test_bf16_losses_are_finite_and_close_to_fp32(tmp_path, split, method):
    runs = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(_cfg(method, precision=precision), str(tmp_path / precision), split=split,
                          progress=False, device="cpu")
        linear = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
        dtypes = set()
        linear.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
        runs[precision] = trainer.fit()["loss"]
        assert dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert all(math.isfinite(v) for v in runs["bf16"]) and len(runs["bf16"]) == 3
    first32, first16 = runs["fp32"][0], runs["bf16"][0]  # same weights, same batch, same views
    assert abs(first16 - first32) <= BF16_TOLERANCE * abs(first32), (first16, first32)


def test_fp16_uses_a_grad_scaler_that_resumes(tmp_path, split):
    cfg = _cfg("cibhash", precision="fp16", checkpoint_every=1)
    whole = Trainer(cfg, str(tmp_path / "a"), split=split, progress=False, device="cpu")
    losses = whole.fit()["loss"]
    assert all(math.isfinite(v) for v in losses) and whole.scaler is not None
    assert "scaler" in load_checkpoint(tmp_path / "a" / "last.pt")
    part = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False, device="cpu")
    part.fit(max_steps=2)
    resumed = Trainer(cfg, str(tmp_path / "b"), split=split, progress=False, device="cpu", resume=True)
    assert resumed.scaler.get_scale() == part.scaler.get_scale()
    assert resumed.fit()["loss"] == losses


def test_fp32_is_the_default_and_unknown_precisions_are_refused():
    assert TrainConfig(method="nsh").precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(method="nsh", precision="fp8")
