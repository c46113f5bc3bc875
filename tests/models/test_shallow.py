"""LSH and ITQ baselines: codes, determinism, ITQ's rotation and quantisation error, retrieval, bad input."""
import pytest
import torch

from hashkern.models import ITQ, LSH


def _clusters(n_per=20, d=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 6
    labels = torch.arange(k).repeat_interleave(n_per)
    return centres[labels] + torch.randn(k * n_per, d, generator=g), labels


@pytest.mark.parametrize("cls", [LSH, ITQ])
@pytest.mark.parametrize("nbits", [1, 5, 12])
def test_codes_and_determinism(cls, nbits):
    x, _ = _clusters()
    a = cls(nbits, seed=3).fit(x)
    codes = a.encode(x)
    assert codes.shape == (60, nbits) and codes.dtype == torch.float32
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(codes, cls(nbits, seed=3).fit(x).encode(x))


def test_lsh_is_sign_of_centred_projection_float64():
    x = torch.randint(0, 256, (7, 1, 3, 3), dtype=torch.uint8)  # images are flattened
    lsh = LSH(5, seed=1).fit(x)
    xf = x.reshape(7, -1).double()
    ref = torch.where((xf - xf.mean(0)) @ lsh.planes >= 0, 1.0, -1.0)
    assert torch.equal(lsh.encode(x), ref.float())
    assert lsh.planes.shape == (9, 5)


def test_itq_rotation_orthogonal_and_lowers_quantisation_error():
    x, _ = _clusters(d=16)
    plain, itq = ITQ(8, iterations=0).fit(x), ITQ(8, iterations=30).fit(x)
    r = itq.rotation
    torch.testing.assert_close(r @ r.T, torch.eye(8, dtype=torch.float64))

    def err(m):
        v = (x.double() - m.mean) @ m.pca @ m.rotation
        return ((torch.where(v >= 0, 1.0, -1.0) - v) ** 2).sum()
    assert err(itq) <= err(plain)
    # the PCA directions are the top eigenvectors of the covariance
    xc = x.double() - x.double().mean(0)
    top = torch.linalg.eigvalsh(xc.T @ xc).flip(0)[:8]
    torch.testing.assert_close(((xc @ itq.pca) ** 2).sum(0).sort(descending=True).values, top)


def test_separated_clusters_retrieve_their_own_class():
    x, labels = _clusters(n_per=30, d=20, k=2, seed=4)
    for coder in (LSH(32, seed=0), ITQ(8)):
        codes = coder.fit(x).encode(x)
        ham = (codes.shape[1] - codes @ codes.T) / 2
        nearest = ham.fill_diagonal_(1e9).argmin(1)
        assert (labels[nearest] == labels).float().mean() > 0.9


def test_bad_input():
    x, _ = _clusters(d=4)
    with pytest.raises(ValueError, match=r"nbits <= min\(n, d\) = 4"):
        ITQ(5).fit(x)
    with pytest.raises(RuntimeError, match="call fit"):
        LSH(4).encode(x)
    with pytest.raises(RuntimeError, match="call fit"):
        ITQ(4).encode(x)
    with pytest.raises(ValueError, match="x has 5 features, fit\\(\\) saw 4"):
        LSH(3).fit(x).encode(torch.randn(2, 5))
    with pytest.raises(ValueError, match="x must be 2-D or 4-D"):
        LSH(3).fit(torch.randn(3))
    with pytest.raises(ValueError, match="nbits must be >= 1"):
        LSH(0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ITQ(2).fit([[1.0, 2.0]])


@pytest.mark.parametrize("cls", [LSH, ITQ])
def test_complex_empty_and_non_finite_features_and_non_int_seeds_are_refused(cls):
    """Regressions: complex x lost its imaginary part, NaN gave all -1 codes, seed="3" was accepted."""
    x = torch.randn(10, 5)
    with pytest.raises(TypeError, match="x must be real"):
        cls(2).fit(x.to(torch.complex64))
    with pytest.raises(TypeError, match="x must be real"):
        cls(2).fit(x).encode(x.to(torch.complex64))
    for bad in (torch.ones(0, 5), torch.ones(10, 0)):
        with pytest.raises(ValueError, match="x must hold at least one sample"):
            cls(2).fit(bad)
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="x must be finite"):
            cls(2).fit(torch.where(torch.arange(5) == 2, value, x))
    for seed in ("3", 2.0, True, torch.tensor(1)):
        with pytest.raises(TypeError, match="seed must be an int"):
            cls(2, seed=seed)
