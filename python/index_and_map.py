"""Build a HammingIndex of database codes, search it, and evaluate retrieval with mAP@k.

The codes can come from anything that outputs ±1 bits; here from ITQ on raw pixels (no training
needed), or from a hashkern checkpoint with --checkpoint.

    python python/index_and_map.py                       # synthetic clusters
    python python/index_and_map.py --data fashion-mnist  # the standard split, ITQ codes
    python python/index_and_map.py --data fashion-mnist --checkpoint runs/demo/nsh-64/last.pt
"""
import argparse
import os
import tempfile

import torch

from hashkern.index import HammingIndex
from hashkern.metrics import mean_average_precision, precision_at_radius
from hashkern.models import ITQ


def synthetic(n_query=50, n_db=500, d=64, classes=5):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, d, generator=g) * 3
    yq, ydb = torch.randint(0, classes, (n_query,), generator=g), torch.randint(0, classes, (n_db,), generator=g)
    xq = centres[yq] + torch.randn(n_query, d, generator=g)
    xdb = centres[ydb] + torch.randn(n_db, d, generator=g)
    return xq, yq, xdb, ydb, xdb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["synthetic", "fashion-mnist"], default="synthetic")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--checkpoint", default=None, help="encode with a trained hashkern model instead of ITQ")
    args = p.parse_args(argv)

    if args.data == "fashion-mnist":
        from hashkern.training.data import load_split
        split = load_split("fashion-mnist")
        xq, yq, xdb, ydb, xtrain = (split.query.images, split.query.labels, split.database.images,
                                    split.database.labels, split.train.images)
    else:
        xq, yq, xdb, ydb, xtrain = synthetic()

    if args.checkpoint:
        from hashkern.training.checkpoint import load_checkpoint, model_from_checkpoint
        from hashkern.training.data import make_transforms
        state = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(state, args.checkpoint)
        cfg = state["train_config"]
        _, normalize = make_transforms(cfg["dataset"], model.backbone.input_size, xq.shape[1],
                                       augment=cfg.get("augment", "hashkern"))
        encode = lambda x: torch.cat([model.encode(normalize(x[i:i + 1024])) for i in range(0, len(x), 1024)])  # noqa: E731
        bits = model.nbits
    else:
        itq = ITQ(args.bits).fit(xtrain)
        encode, bits = itq.encode, args.bits

    q_codes, db_codes = encode(xq), encode(xdb)          # ±1 [n, bits]
    index = HammingIndex(bits)
    index.add(db_codes)                                   # stored packed, 8 bits a byte
    dist, idx = index.search(q_codes[:3], k=5)
    print(f"index: {index}; the 5 nearest of query 0: ids {idx[0].tolist()} at distances {dist[0].tolist()}")
    with tempfile.TemporaryDirectory() as tmp:            # indexes save and load atomically
        path = os.path.join(tmp, "db.hkindex")
        index.save(path)
        assert torch.equal(HammingIndex.load(path).codes, index.codes)

    topk = min(args.topk, len(index))
    # Keywords only: no order to get wrong (DeepHash's CalcTopMap takes the database first).
    m = mean_average_precision(q_codes=q_codes, db_codes=db_codes, q_labels=yq, db_labels=ydb, topk=topk)
    p2 = precision_at_radius(q_codes=q_codes, db_codes=db_codes, q_labels=yq, db_labels=ydb, r=2)
    print(f"mAP@{topk} = {m:.4f}   P@H<=2 = {p2:.4f}   ({len(yq)} queries, {len(index)} database codes, {bits} bits)")
    return m


if __name__ == "__main__":
    main()
