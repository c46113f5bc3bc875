"""Loaders (Fashion-MNIST idx, CIFAR-10 pickles, DeepHash image lists) and the standard split."""
import os

import numpy as np
import pytest
import torch
from synthetic_data import write_cifar10, write_fashion_mnist, write_idx

from hashkern.training.data import (
    load_cifar10,
    load_fashion_mnist,
    load_image_list,
    load_split,
    read_image_list,
    standard_split,
)
from hashkern.training.data.datasets import FASHION_MNIST_DIR


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, compress):
    images, labels = write_fashion_mnist(str(tmp_path), 3, 2, compress=compress)
    data = load_fashion_mnist(str(tmp_path))
    assert data.images.shape == (50, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert torch.equal(data.labels, torch.from_numpy(labels).long())
    assert data.num_classes == 10


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path / "nowhere"))


def test_idx_bad_magic_and_truncated(tmp_path):
    write_fashion_mnist(str(tmp_path), 1, 1)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    import gzip
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="bad magic"):
        load_fashion_mnist(str(tmp_path))
    write_idx(str(tmp_path / "train-images-idx3-ubyte"), np.zeros((10, 28, 28)), compress=True)
    with gzip.open(bad, "rb") as f:
        data = f.read()
    with gzip.open(bad, "wb") as f:
        f.write(data[:-5])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(str(tmp_path))


def test_cifar10_pickles(tmp_path):
    images, labels = write_cifar10(str(tmp_path), per_batch=3)
    data = load_cifar10(str(tmp_path))
    assert data.images.shape == (18, 3, 32, 32)
    assert torch.equal(data.images, torch.from_numpy(images))
    assert torch.equal(data.labels, torch.from_numpy(labels).long())
    os.remove(tmp_path / "test_batch")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(str(tmp_path))


def test_cibhash_cifar10_split(tmp_path):
    """zexuanqiu/CIBHash get_cifar: training images per class from the training batches, which are the whole
    database; the shuffled test batch's first half the validation queries, its second half the queries."""
    _, labels = write_cifar10(str(tmp_path), per_batch=20)  # 100 training-batch images, 20 test images
    split = load_split("cifar10-cibhash", str(tmp_path), seed=4, train_per_class=2)
    data = load_cifar10(str(tmp_path))
    assert data.official_test.tolist() == [False] * 100 + [True] * 20
    assert len(split.query) == 10 and split.query.official_test.all()
    assert len(split.validation) == 10 and split.validation.official_test.all()
    test_rows = {tuple(x.flatten().tolist()) for x in data.images[100:]}
    halves = [{tuple(x.flatten().tolist()) for x in part.images} for part in (split.query, split.validation)]
    assert not halves[0] & halves[1] and halves[0] | halves[1] == test_rows
    assert len(split.database) == 100 and not split.database.official_test.any()
    assert torch.equal(split.database.images, data.images[:100])
    assert torch.bincount(split.train.labels, minlength=10).tolist() == [2] * 10
    db = {tuple(x.flatten()[:16].tolist()) for x in split.database.images}
    assert all(tuple(x.flatten()[:16].tolist()) in db for x in split.train.images)  # training images in the database
    again = load_split("cifar10-cibhash", str(tmp_path), seed=4, train_per_class=2)
    assert torch.equal(again.query.images, split.query.images) and torch.equal(again.train.images, split.train.images)
    other = load_split("cifar10-cibhash", str(tmp_path), seed=5, train_per_class=2)
    assert not torch.equal(other.query.images, split.query.images)
    with pytest.raises(ValueError, match="fewer than train_per_class = 50"):
        load_split("cifar10-cibhash", str(tmp_path), train_per_class=50)


def test_image_list(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "imgs")
    pixels = []
    for i in range(3):
        arr = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)  # odd, non-square source images
        Image.fromarray(arr).save(tmp_path / "imgs" / f"{i}.png")
        pixels.append(arr)
    (tmp_path / "test.txt").write_text("imgs/0.png 1 0 1\nimgs/1.png 0 1 0\n\nimgs/2.png 0 0 1\n")
    paths, labels = read_image_list(str(tmp_path / "test.txt"))
    assert paths == ["imgs/0.png", "imgs/1.png", "imgs/2.png"]
    assert labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    data = load_image_list(str(tmp_path), str(tmp_path / "test.txt"), image_size=5)
    assert data.images.shape == (3, 3, 5, 5) and data.num_classes == 3
    ref = np.asarray(Image.fromarray(pixels[1]).resize((5, 5), Image.BILINEAR))
    assert torch.equal(data.images[1], torch.from_numpy(ref.copy()).permute(2, 0, 1))
    (tmp_path / "bad.txt").write_text("imgs/0.png\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_image_list(str(tmp_path / "bad.txt"))
    (tmp_path / "ragged.txt").write_text("imgs/0.png 1 0\nimgs/1.png 1\n")
    with pytest.raises(ValueError, match="different numbers of labels"):
        read_image_list(str(tmp_path / "ragged.txt"))
    (tmp_path / "gone.txt").write_text("imgs/9.png 1 0\n")
    with pytest.raises(FileNotFoundError, match="9.png"):
        load_image_list(str(tmp_path), str(tmp_path / "gone.txt"))
    for name in ("train", "database"):
        (tmp_path / f"{name}.txt").write_text((tmp_path / "test.txt").read_text())
    split = load_split("imagelist", str(tmp_path), image_size=4)
    assert len(split.query) == len(split.train) == len(split.database) == 3
    assert split.validation is None  # DeepHash-pytorch's lists have no validation part


@pytest.mark.parametrize("shape", [(9, 7), (7, 9), (6, 6), (50, 13), (13, 50)])
def test_center_crop_decoding_is_torchvisions_resize_and_center_crop(tmp_path, shape):
    """WCH's code: transforms.Resize(S) (short side to S) then CenterCrop(S), on a PIL image."""
    from PIL import Image
    arr = np.random.default_rng(sum(shape)).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 1 0\n")
    size = 5
    got = load_image_list(str(tmp_path), str(tmp_path / "list.txt"), image_size=size, resize="center-crop").images[0]
    assert got.shape == (3, size, size)
    h, w = shape
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # (width, height)
    left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    ref = np.asarray(Image.fromarray(arr).resize(new, Image.BILINEAR).crop((left, top, left + size, top + size)))
    assert torch.equal(got, torch.from_numpy(ref.copy()).permute(2, 0, 1))
    tv = pytest.importorskip("torchvision.transforms")
    expected = tv.Compose([tv.Resize(size), tv.CenterCrop(size), tv.PILToTensor()])(Image.fromarray(arr))
    assert torch.equal(got, expected)
    if h != w:  # stretching differs: it keeps the whole image
        assert not torch.equal(got, load_image_list(str(tmp_path), str(tmp_path / "list.txt"), size).images[0])
    with pytest.raises(ValueError, match="resize must be one of"):
        load_image_list(str(tmp_path), str(tmp_path / "list.txt"), size, resize="crop")


@pytest.mark.parametrize("classes,per_class", [(10, 20), (3, 7), (1, 3)])
def test_standard_split_counts_disjoint_seeded(classes, per_class):
    labels = torch.arange(classes).repeat_interleave(per_class)[torch.randperm(classes * per_class)]
    q, t, d = standard_split(labels, query_per_class=1, train_per_class=2, seed=5)
    assert len(q) == classes and len(t) == 2 * classes and len(d) == (per_class - 3) * classes
    everything = torch.cat([q, t, d])
    assert torch.equal(everything.sort().values, torch.arange(classes * per_class))  # disjoint, complete
    for c in range(classes):
        assert (labels[q] == c).sum() == 1 and (labels[t] == c).sum() == 2
    again = standard_split(labels, 1, 2, seed=5)
    assert all(torch.equal(a, b) for a, b in zip((q, t, d), again))
    if per_class > 3:
        other = standard_split(labels, 1, 2, seed=6)
        assert not all(torch.equal(a, b) for a, b in zip((q, t, d), other))


def test_standard_split_bad_input():
    with pytest.raises(ValueError, match="class 1 has 2 images"):
        standard_split(torch.tensor([0, 0, 0, 1, 1]), 1, 2)
    with pytest.raises(TypeError, match="labels must have dtype"):
        standard_split(torch.zeros(4), 1, 1)
    with pytest.raises(ValueError, match="labels must be 1-D"):
        standard_split(torch.zeros(2, 2, dtype=torch.long), 1, 1)
    with pytest.raises(ValueError, match="query_per_class must be >= 1"):
        standard_split(torch.zeros(4, dtype=torch.long), 0, 1)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_split("mnist")
    with pytest.raises(ValueError, match="cifar10 needs --data-dir"):
        load_split("cifar10")


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_protocol():
    split = load_split("fashion-mnist", seed=0)
    assert (len(split.query), len(split.train), len(split.database)) == (1000, 5000, 64000)
    assert torch.bincount(split.query.labels).tolist() == [100] * 10
    assert torch.bincount(split.train.labels).tolist() == [500] * 10
    # Queries from the official test split, training images from the training split (what pretraining reads).
    assert split.query.official_test.all() and not split.train.official_test.any()
    assert int(split.database.official_test.sum()) == 9000


def test_standard_split_query_from_keeps_each_pool_apart():
    labels = torch.arange(40) % 4
    query_from = torch.arange(40) >= 28  # 3 per class may be queries
    q, t, d = standard_split(labels, query_per_class=2, train_per_class=4, seed=1, query_from=query_from)
    assert query_from[q].all() and not query_from[t].any()
    assert sorted(torch.cat([q, t, d]).tolist()) == list(range(40))
    with pytest.raises(ValueError, match="allowed as queries"):
        standard_split(labels, query_per_class=4, train_per_class=1, query_from=query_from)
    with pytest.raises(ValueError, match="query_from"):
        standard_split(labels, 1, 1, query_from=query_from[:5])
