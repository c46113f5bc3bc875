"""Datasets on local disk, the standard seeded split, and batched two-view augmentations."""
from hashkern.training.data.augment import Normalize, TwoViewAugment, make_transforms
from hashkern.training.data.datasets import (
    ImageSet,
    load_cifar10,
    load_fashion_mnist,
    load_fashion_mnist_train_images,
    load_image_list,
    read_image_list,
)
from hashkern.training.data.split import DATASETS, Split, load_pretraining_images, load_split, standard_split

__all__ = ["DATASETS", "ImageSet", "Normalize", "Split", "TwoViewAugment", "load_cifar10", "load_fashion_mnist",
           "load_fashion_mnist_train_images", "load_image_list", "load_pretraining_images", "load_split",
           "make_transforms", "read_image_list", "standard_split"]
