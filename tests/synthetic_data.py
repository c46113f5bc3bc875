"""Tiny on-disk datasets for the data, training and CLI tests (tests/ is on sys.path via conftest.py)."""
from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import torch

from hashkern.training.data import ImageSet, Split


def write_idx(path: str, array: np.ndarray, compress: bool = True) -> None:
    """An idx file of unsigned bytes: magic 0 0 8 ndim, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    with (gzip.open if compress else open)(path + (".gz" if compress else ""), "wb") as f:
        f.write(data)


def class_images(n_per_class: int, classes: int = 10, size: int = 28, channels: int = 1, seed: int = 0):
    """Images whose class is a bright square in a class-specific place, plus noise: [N, C, S, S] uint8, [N]."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    images = rng.integers(0, 60, size=(labels.size, channels, size, size)).astype(np.uint8)
    cell = size // 4
    for i, c in enumerate(labels):
        r, q = divmod(int(c) % 16, 4)
        images[i, :, r * cell:(r + 1) * cell, q * cell:(q + 1) * cell] = 220
    perm = rng.permutation(labels.size)
    return images[perm], labels[perm]


def write_fashion_mnist(root: str, n_train_per_class: int = 12, n_test_per_class: int = 3, compress=True):
    """A Fashion-MNIST-format folder; returns (images [N, 28, 28], labels [N]) in load order (train, test)."""
    os.makedirs(root, exist_ok=True)
    tr_x, tr_y = class_images(n_train_per_class, seed=1)
    te_x, te_y = class_images(n_test_per_class, seed=2)
    write_idx(os.path.join(root, "train-images-idx3-ubyte"), tr_x[:, 0], compress)
    write_idx(os.path.join(root, "train-labels-idx1-ubyte"), tr_y, compress)
    write_idx(os.path.join(root, "t10k-images-idx3-ubyte"), te_x[:, 0], compress)
    write_idx(os.path.join(root, "t10k-labels-idx1-ubyte"), te_y, compress)
    return np.concatenate([tr_x[:, 0], te_x[:, 0]]), np.concatenate([tr_y, te_y])


def write_cifar10(root: str, per_batch: int = 4):
    """A cifar-10-batches-py folder with tiny batches; returns (images [N, 3, 32, 32], labels [N])."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(3)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch).tolist()
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump({b"data": x, b"labels": y}, f)
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.extend(y)
    return np.concatenate(xs), np.array(ys)


def tiny_split(n_query: int = 2, n_train: int = 4, n_db: int = 4, classes: int = 10, size: int = 28,
               channels: int = 1, seed: int = 0) -> Split:
    """An in-memory split: per class n_query queries, n_train training images, n_db database images."""
    images, labels = class_images(n_query + n_train + n_db, classes, size, channels, seed)
    images, labels = torch.from_numpy(images), torch.from_numpy(labels).long()
    order = torch.argsort(labels, stable=True).view(classes, -1)
    q, t = order[:, :n_query].flatten(), order[:, n_query:n_query + n_train].flatten()
    d = order[:, n_query + n_train:].flatten()
    whole = ImageSet(images, labels, "fashion-mnist")
    return Split(whole.subset(q), whole.subset(t), whole.subset(d))
