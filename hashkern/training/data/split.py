"""The standard unsupervised-hashing protocol split, and loading a dataset by name into it."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from hashkern._validation import check_int, check_tensor
from hashkern.training.data.datasets import (
    FASHION_MNIST_DIR,
    ImageSet,
    load_cifar10,
    load_fashion_mnist,
    load_fashion_mnist_train_images,
    load_image_list,
)

DATASETS = ("fashion-mnist", "cifar10", "imagelist")


@dataclass
class Split:
    """query / train / database image sets of one dataset."""
    query: ImageSet
    train: ImageSet
    database: ImageSet


def standard_split(labels: torch.Tensor, query_per_class: int = 100, train_per_class: int = 500,
                   seed: int = 0, query_from: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    """Per class, ``query_per_class`` queries and ``train_per_class`` training images, the rest database.

    labels: [N] int64 class ids. Returns index tensors (query, train, database), disjoint, each
    sorted by class then by a seeded permutation. With 10 classes and the defaults: 1,000 queries,
    5,000 training images (the CIFAR-10 protocol of CIBHash, NSH and WCH).
    ``query_from``: [N] bool, the images queries may come from (e.g. a dataset's official test split);
    training images then come only from the others, so neither ever holds the other's images.
    """
    check_tensor("labels", labels, ndim=1, dtypes=(torch.int64, torch.int32))
    check_int("query_per_class", query_per_class, low=1)
    check_int("train_per_class", train_per_class, low=1)
    if query_from is not None:
        check_tensor("query_from", query_from, ndim=1, dtypes=(torch.bool,))
        if query_from.shape != labels.shape:
            raise ValueError(f"query_from must have the shape of labels {tuple(labels.shape)}, "
                             f"got {tuple(query_from.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    query, train, database = [], [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(members.numel(), generator=gen)]
        if query_from is None:
            query_pool = train_pool = members
        else:
            query_pool, train_pool = members[query_from[members]], members[~query_from[members]]
        if members.numel() < query_per_class + train_per_class:
            raise ValueError(f"class {c} has {members.numel()} images, fewer than query_per_class + "
                             f"train_per_class = {query_per_class + train_per_class}")
        if query_pool.numel() < query_per_class or train_pool.numel() < train_per_class:
            raise ValueError(f"class {c} has {query_pool.numel()} images allowed as queries and "
                             f"{train_pool.numel()} others, fewer than query_per_class = {query_per_class} or "
                             f"train_per_class = {train_per_class}")
        q = query_pool[:query_per_class]
        t = train_pool[:train_per_class] if query_from is not None else members[query_per_class:][:train_per_class]
        query.append(q)
        train.append(t)
        database.append(members[~torch.isin(members, torch.cat([q, t]))])
    return torch.cat(query), torch.cat(train), torch.cat(database)


def load_split(dataset: str, data_dir: str | None = None, *, seed: int = 0, query_per_class: int = 100,
               train_per_class: int = 500, image_size: int = 224) -> Split:
    """Load ``dataset`` ("fashion-mnist", "cifar10" or "imagelist") and split it.

    Single-label sets get :func:`standard_split`; an image-list folder brings its own
    ``test.txt`` (queries), ``train.txt`` and ``database.txt``. Fashion-MNIST takes its queries from
    the official test split and its training images from the training split (so a backbone
    pretrained on the training split, see :func:`load_pretraining_images`, has never seen a query);
    CIFAR-10 draws both from all 60,000 images, as CIBHash, NSH and WCH do.
    """
    if dataset == "fashion-mnist":
        full = load_fashion_mnist(data_dir or FASHION_MNIST_DIR)
    elif dataset == "cifar10":
        if data_dir is None:
            raise ValueError("cifar10 needs --data-dir: the cifar-10-batches-py folder")
        full = load_cifar10(data_dir)
    elif dataset == "imagelist":
        if data_dir is None:
            raise ValueError("imagelist needs --data-dir: a folder with train.txt, test.txt, database.txt")
        sets = [load_image_list(data_dir, os.path.join(data_dir, f"{n}.txt"), image_size)
                for n in ("test", "train", "database")]
        return Split(*sets)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    query_from = full.official_test if dataset == "fashion-mnist" else None
    q, t, d = standard_split(full.labels, query_per_class, train_per_class, seed, query_from=query_from)
    return Split(full.subset(q), full.subset(t), full.subset(d))


def load_pretraining_images(dataset: str = "fashion-mnist", data_dir: str | None = None) -> torch.Tensor:
    """The unlabelled images self-supervised pretraining may use: the official training split only.

    Returns uint8 [N, C, H, W] (Fashion-MNIST: [60000, 1, 28, 28]); no label file is read.
    """
    if dataset != "fashion-mnist":
        raise ValueError(f"pretraining supports dataset 'fashion-mnist' (its training split), got {dataset!r}")
    return load_fashion_mnist_train_images(data_dir or FASHION_MNIST_DIR)
