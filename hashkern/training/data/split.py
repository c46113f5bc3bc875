"""The standard unsupervised-hashing protocol split, and loading a dataset by name into it."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from hashkern._validation import check_int, check_tensor
from hashkern.training.data.datasets import (
    FASHION_MNIST_DIR,
    ImageSet,
    image_list,
    load_cifar10,
    load_fashion_mnist,
    load_fashion_mnist_train_images,
)
from hashkern.training.data.streamed import ImageFiles, read_image_folder

DATASETS = ("fashion-mnist", "cifar10", "cifar10-1", "cifar10-cibhash", "imagelist", "imagefolder")
LIST_PARTS = {"query": "test", "train": "train", "database": "database"}  # DeepHash-pytorch's file names


@dataclass
class Split:
    """query / train / database image sets of one dataset, and the validation queries of a protocol that
    has them (None otherwise): a run that keeps its best epoch chooses it on these, not on the queries."""
    query: ImageSet
    train: ImageSet
    database: ImageSet
    validation: ImageSet | None = None


def standard_split(labels: torch.Tensor, query_per_class: int = 100, train_per_class: int = 500,
                   seed: int = 0, query_from: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    """Per class, ``query_per_class`` queries and ``train_per_class`` training images, the rest database.

    labels: [N] int64 class ids. Returns index tensors (query, train, database), disjoint, each
    sorted by class then by a seeded permutation. With 10 classes and the defaults: 1,000 queries,
    5,000 training images (DeepHash-pytorch's CIFAR-10 protocol, which WCH's code uses).
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


def cibhash_cifar10_split(official_test: torch.Tensor, labels: torch.Tensor, train_per_class: int = 500,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIBHash's code's CIFAR-10 split (zexuanqiu/CIBHash ``utils/data.py``, ``get_cifar``): index tensors
    (query, train, database, validation).

    official_test: [N] bool, labels: [N] int64. The database is every image of the training batches;
    ``train_per_class`` of them per class are the training images (also in the database); the test
    batch is shuffled (seeded) into two halves: the first the validation queries the code chooses its
    epoch on, the second the queries it reports.
    """
    check_tensor("official_test", official_test, ndim=1, dtypes=(torch.bool,))
    check_int("train_per_class", train_per_class, low=1)
    gen = torch.Generator().manual_seed(int(seed))
    test, database = torch.nonzero(official_test).flatten(), torch.nonzero(~official_test).flatten()
    shuffled = test[torch.randperm(test.numel(), generator=gen)]
    validation, query = shuffled[:test.numel() // 2], shuffled[test.numel() // 2:]
    train = []
    for c in torch.unique(labels[database]).tolist():
        members = database[labels[database] == c]
        if members.numel() < train_per_class:
            raise ValueError(f"class {c} has {members.numel()} training-batch images, fewer than "
                             f"train_per_class = {train_per_class}")
        train.append(members[torch.randperm(members.numel(), generator=gen)][:train_per_class])
    return query, torch.cat(train), database, validation


def load_split(dataset: str, data_dir: str | None = None, *, seed: int = 0, query_per_class: int = 100,
               train_per_class: int = 500, image_size: int = 224, image_resize: str = "stretch",
               lists: dict | None = None) -> Split:
    """Load ``dataset`` (one of :data:`DATASETS`) and split it.

    Single-label sets get :func:`standard_split`; ``"cifar10-1"`` is DeepHash-pytorch's variant
    whose database also holds the training images (59,000 with the defaults); ``"cifar10-cibhash"``
    is CIBHash's code's split (:func:`cibhash_cifar10_split`: 5,000 queries and 5,000 validation queries
    from the test batch, the 50,000 training images as database; ``query_per_class`` is not used). ``"imagelist"``
    brings its own DeepHash-pytorch lists: ``lists`` maps "query", "train", "database" to list
    files anywhere (default ``data_dir``/test.txt, train.txt, database.txt), paths inside relative to
    ``data_dir``. ``"imagefolder"``: ``data_dir/<class>/<image>``, split by :func:`standard_split`.
    Both keep their images on disk (:class:`ImageFiles`, decoded to ``image_size``² on demand as
    ``image_resize`` says).
    Fashion-MNIST takes its queries from
    the official test split and its training images from the training split (so a backbone
    pretrained on the training split, see :func:`load_pretraining_images`, has never seen a query);
    ``"cifar10"`` draws both from all 60,000 images, as DeepHash-pytorch and WCH's code do.
    """
    if dataset == "fashion-mnist":
        full = load_fashion_mnist(data_dir or FASHION_MNIST_DIR)
    elif dataset in ("cifar10", "cifar10-1", "cifar10-cibhash"):
        if data_dir is None:
            raise ValueError(f"{dataset} needs --data-dir: the cifar-10-batches-py folder")
        full = load_cifar10(data_dir)
    elif dataset == "imagelist":
        lists = {**{part: None for part in LIST_PARTS}, **(lists or {})}
        if data_dir is None:
            raise ValueError("imagelist needs --data-dir: the folder the listed image paths are relative to")
        sets = [image_list(data_dir, lists[part] or os.path.join(data_dir, f"{name}.txt"), image_size, image_resize)
                for part, name in LIST_PARTS.items()]
        return Split(*sets)
    elif dataset == "imagefolder":
        if data_dir is None:
            raise ValueError("imagefolder needs --data-dir: a folder of <class>/<image> files")
        paths, labels, _ = read_image_folder(data_dir)
        full = ImageSet(ImageFiles(data_dir, paths, image_size, image_resize), labels, os.path.basename(data_dir))
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if dataset == "cifar10-cibhash":
        q, t, d, v = cibhash_cifar10_split(full.official_test, full.labels, train_per_class, seed)
        return Split(full.subset(q), full.subset(t), full.subset(d), full.subset(v))
    query_from = full.official_test if dataset == "fashion-mnist" else None
    q, t, d = standard_split(full.labels, query_per_class, train_per_class, seed, query_from=query_from)
    if dataset == "cifar10-1":  # the database is every image but the queries
        d = torch.cat([t, d])
    return Split(full.subset(q), full.subset(t), full.subset(d))


def load_pretraining_images(dataset: str = "fashion-mnist", data_dir: str | None = None) -> torch.Tensor:
    """The unlabelled images self-supervised pretraining may use: the official training split only.

    Returns uint8 [N, C, H, W] (Fashion-MNIST: [60000, 1, 28, 28]); no label file is read.
    """
    if dataset != "fashion-mnist":
        raise ValueError(f"pretraining supports dataset 'fashion-mnist' (its training split), got {dataset!r}")
    return load_fashion_mnist_train_images(data_dir or FASHION_MNIST_DIR)
