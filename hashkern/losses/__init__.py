"""Drop-in ``nn.Module`` losses built on the ops, with functional forms."""
from hashkern.losses.ntxent import NTXentLoss, nt_xent  # noqa: F401
from hashkern.losses.sorted_nce import SortedNCELoss, sorted_nce_loss  # noqa: F401
from hashkern.losses.wch import BitBalanceLoss, WCHLoss, bit_balance_loss, wch_loss, wch_weights  # noqa: F401
