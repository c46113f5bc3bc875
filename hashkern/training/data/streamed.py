"""Images decoded from files on demand: DeepHash-pytorch image lists and ImageFolder layouts.

:class:`ImageFiles` stands where a uint8 ``[N, 3, S, S]`` tensor stands (``shape``, ``dtype``,
``len``, indexing) but holds only the file paths: memory is a few bytes per image (the path),
not ``3·S²``. Decoding is deterministic (PIL, RGB, bilinear: the whole image resized to ``S×S``, or its
short side to ``S`` and the centre ``S×S`` kept, as torchvision's ``Resize(S)`` + ``CenterCrop(S)``
that WCH's code applies), so which process decodes an
image -- the main one or a DataLoader worker -- never changes a result. :func:`step_batches`
decodes the batches of a run's steps ahead in DataLoader workers (pinned memory, prefetch).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from hashkern._validation import check_int

__all__ = ["ImageFiles", "IMAGE_EXTENSIONS", "RESIZE_MODES", "read_image_folder", "decode_image", "step_batches"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
# How a file becomes size×size: "stretch" resizes the whole image (aspect not kept); "center-crop"
# resizes the short side to size (aspect kept) and keeps the centre square.
RESIZE_MODES = ("stretch", "center-crop")


def check_resize(resize: str) -> str:
    if resize not in RESIZE_MODES:
        raise ValueError(f"image resize must be one of {RESIZE_MODES}, got {resize!r}")
    return resize


def _center_crop_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resized (w, h), crop box) of torchvision's ``Resize(size)`` then ``CenterCrop(size)``."""
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return new, (left, top, left + size, top + size)


def decode_image(path: str, size: int, resize: str = "stretch") -> torch.Tensor:
    """The image file at ``path`` as uint8 [3, size, size] (RGB, bilinear; ``resize``: one of
    :data:`RESIZE_MODES`)."""
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} not found; check --data-dir points at the image root")
    with Image.open(path) as im:
        im = im.convert("RGB")
        if check_resize(resize) == "stretch":
            im = im.resize((size, size), Image.BILINEAR)
        else:
            new, box = _center_crop_box(im.width, im.height, size)
            im = im.resize(new, Image.BILINEAR).crop(box)
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


class ImageFiles:
    """Image files under ``root`` read on demand as uint8 ``[3, size, size]`` each (``resize``: one of
    :data:`RESIZE_MODES`).

    ``files[i]`` -> [3, S, S]; ``files[index]`` (slice, sequence or int64 tensor) -> [n, 3, S, S];
    ``files.subset(index)`` -> another ImageFiles, nothing decoded. ``paths`` are relative to
    ``root`` (absolute paths are kept as they are).
    """

    dtype = torch.uint8

    def __init__(self, root: str, paths, size: int = 224, resize: str = "stretch"):
        self.root, self.size = os.fspath(root), check_int("size", size, low=1)
        self.resize = check_resize(resize)
        # One fixed-width bytes array, not a Python str per image.
        self._paths = paths if isinstance(paths, np.ndarray) else np.array([os.fsencode(p) for p in paths])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self._paths), 3, self.size, self.size))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, i: int) -> str:
        return os.path.join(self.root, os.fsdecode(self._paths[i]))

    @property
    def paths(self) -> list[str]:
        """The listed paths (as given, relative to ``root``)."""
        return [os.fsdecode(p) for p in self._paths]

    def _positions(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(len(self))[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return np.arange(len(self))[np.asarray(index, dtype=np.int64)]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            return decode_image(self.path(int(index)), self.size, self.resize)
        rows = [decode_image(self.path(int(i)), self.size, self.resize) for i in self._positions(index)]
        return torch.stack(rows) if rows else torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)

    def subset(self, index) -> "ImageFiles":
        return ImageFiles(self.root, self._paths[self._positions(index)], self.size, self.resize)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images under {self.root!r}, decoded to {self.size}x{self.size}, {self.resize})"


def read_image_folder(root: str) -> tuple[list[str], torch.Tensor, list[str]]:
    """An ImageFolder layout ``root/<class>/<image>`` -> (relative paths, [N] int64 class ids, class names).

    Classes are the sub-folders in sorted order; files in each are sorted, those without an
    image extension ignored."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} not found (expected root/<class>/<image> files)")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for c, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(root, name))):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(name, file))
                labels.append(c)
    if not paths:
        raise ValueError(f"image folder {root!r} has no images in class sub-folders "
                         f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    return paths, torch.tensor(labels, dtype=torch.int64), classes


class _Batches(torch.utils.data.Dataset):
    """Item ``j``: the decoded images of ``batches[j]`` (positions in ``images``)."""

    def __init__(self, images, batches):
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, j: int) -> torch.Tensor:
        return self.images[self.batches[j]]


def step_batches(images, batches, *, workers: int = 0, pin_memory: bool = False, prefetch: int = 2):
    """The images of each index batch in ``batches``, in order: ``images[batch]`` for each.

    ``workers > 0`` decodes ahead in that many DataLoader processes (``prefetch`` batches each,
    pinned when ``pin_memory``); the batches and their order do not depend on ``workers``.
    """
    check_int("workers", workers, low=0)
    if workers == 0:
        return (images[b] for b in batches)
    loader = torch.utils.data.DataLoader(_Batches(images, batches), batch_size=None, shuffle=False,
                                         num_workers=workers, pin_memory=pin_memory, prefetch_factor=prefetch,
                                         persistent_workers=False)
    return iter(loader)
