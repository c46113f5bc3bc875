"""Datasets on local disk: Fashion-MNIST (idx files), CIFAR-10 (python pickles), DeepHash-pytorch image lists.

Nothing here downloads. A missing dataset raises ``FileNotFoundError`` saying where it was
looked for and how to get it.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from hashkern.training.data.streamed import ImageFiles

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class ImageSet:
    """A labelled image set.

    images: [N, C, H, W] uint8 in memory, or an :class:`~hashkern.training.data.streamed.ImageFiles`
    (the same, decoded from files on demand); labels: [N] int64 class ids, or [N, L] multi-hot (multi-label sets);
    official_test: [N] bool, the images of the dataset's official test split (None: not known).
    """
    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""
    official_test: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.images, (torch.Tensor, ImageFiles)) or self.images.dim() != 4 \
                or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be [N, C, H, W] uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"labels has {self.labels.shape[0]} rows but images has {self.images.shape[0]}")
        if self.official_test is not None and self.official_test.shape != (self.images.shape[0],):
            raise ValueError(f"official_test must be [{self.images.shape[0]}] bool, got "
                             f"{tuple(self.official_test.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> "ImageSet":
        test = None if self.official_test is None else self.official_test[index]
        images = self.images.subset(index) if isinstance(self.images, ImageFiles) else self.images[index]
        return ImageSet(images, self.labels[index], self.name, test)

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1]) if self.labels.dim() == 2 else int(self.labels.max()) + 1


def _missing(what: str, path: str, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at {path!r}. {how}")


def _read_idx(path: str) -> np.ndarray:
    """An idx file (optionally .gz): big-endian header, magic 0x0000 08 <ndim>, then uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # gzip names no file
        raise ValueError(f"{path} is truncated or not a valid gzip file ({exc}); download it again") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {tuple(dims)}, found {body.size} bytes")
    return body.reshape(tuple(dims))


def _find(root: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _fashion_mnist_paths(root: str, keys) -> dict:
    paths = {k: _find(root, FASHION_MNIST_FILES[k]) for k in keys}
    missing = [FASHION_MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise _missing("Fashion-MNIST", root, f"Missing {', '.join(missing)}(.gz). On Debian/Ubuntu: "
                       "`apt-get install dataset-fashion-mnist` (installs it under " + FASHION_MNIST_DIR + "), "
                       "or pass --data-dir pointing at a folder with the four idx files.")
    return paths


def load_fashion_mnist(root: str = FASHION_MNIST_DIR) -> ImageSet:
    """All 70,000 Fashion-MNIST images (train then test) as one set: images [70000, 1, 28, 28]."""
    paths = _fashion_mnist_paths(root, FASHION_MNIST_FILES)
    train, test = _read_idx(paths["train_images"]), _read_idx(paths["test_images"])
    labels = np.concatenate([_read_idx(paths["train_labels"]), _read_idx(paths["test_labels"])])
    official_test = torch.cat([torch.zeros(len(train), dtype=torch.bool), torch.ones(len(test), dtype=torch.bool)])
    return ImageSet(torch.from_numpy(np.concatenate([train, test])).unsqueeze(1),
                    torch.from_numpy(labels.astype(np.int64)), "fashion-mnist", official_test)


def load_fashion_mnist_train_images(root: str = FASHION_MNIST_DIR) -> torch.Tensor:
    """The 60,000 images of Fashion-MNIST's training split, [60000, 1, 28, 28] uint8; no label is read."""
    paths = _fashion_mnist_paths(root, ("train_images",))
    return torch.from_numpy(_read_idx(paths["train_images"]).copy()).unsqueeze(1)


def load_cifar10(root: str) -> ImageSet:
    """CIFAR-10 from its python-pickle folder (``cifar-10-batches-py``): images [60000, 3, 32, 32], the
    training batches first; ``official_test`` marks the 10,000 of ``test_batch``."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
    if missing:
        raise _missing("CIFAR-10", root, f"Missing {', '.join(missing)}; expected the python version's folder "
                       "(cifar-10-batches-py with data_batch_1..5 and test_batch).")
    images, labels = [], []
    for name in names:
        with open(os.path.join(root, name), "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    official_test = torch.zeros(sum(len(x) for x in images), dtype=torch.bool)
    official_test[-len(images[-1]):] = True  # test_batch
    return ImageSet(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), "cifar10",
                    official_test)


def read_image_list(list_file: str) -> tuple[list[str], torch.Tensor]:
    """A DeepHash-pytorch list: one ``relative/path.jpg 0 1 0 ...`` line per image -> (paths, [N, L] multi-hot)."""
    if not os.path.isfile(list_file):
        raise _missing("image list", list_file, "Expected a DeepHash-pytorch style train.txt/test.txt/database.txt.")
    paths, rows = [], []
    with open(list_file) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{list_file}:{lineno}: expected 'path label0 label1 ...', got {line.strip()!r}")
            paths.append(parts[0])
            rows.append([int(v) for v in parts[1:]])
    if not rows:
        raise ValueError(f"{list_file} lists no images")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{list_file}: lines have different numbers of labels")
    return paths, torch.tensor(rows, dtype=torch.int64)


def load_image_list(image_root: str, list_file: str, image_size: int = 224, resize: str = "stretch") -> ImageSet:
    """Decode every image of a list (to ``image_size``², see :func:`image_list`) into memory: images [N, 3, S, S]."""
    streamed = image_list(image_root, list_file, image_size, resize)
    return ImageSet(streamed.images[:], streamed.labels, streamed.name)


def image_list(image_root: str, list_file: str, image_size: int = 224, resize: str = "stretch") -> ImageSet:
    """A DeepHash-pytorch list whose images stay on disk (:class:`ImageFiles`, decoded on demand to
    ``image_size``², ``resize`` one of :data:`~hashkern.training.data.streamed.RESIZE_MODES`);
    paths are relative to ``image_root``, the list file may be anywhere."""
    paths, labels = read_image_list(list_file)
    return ImageSet(ImageFiles(image_root, paths, image_size, resize), labels,
                    os.path.basename(os.path.dirname(os.path.abspath(list_file))))
