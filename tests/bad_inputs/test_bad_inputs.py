"""The generated bad-input suite: every case is refused with an error naming its argument, or equals its oracle.

Cases live in ``cases_<area>.py`` beside this file (see ``badinput.py``); ``python
tests/bad_inputs/report.py`` prints the count of every outcome class. Areas covered:

- ``codes``: sign_ste, pack_bits, unpack_bits, hamming_distance;
- ``search``: hamming_topk, hamming_radius; ``index``: HammingIndex; ``metrics``: mAP, P@H<=r, PR curves;
- ``checkpoint``: save / load / model_from_checkpoint;
- ``softsort``: soft_sort, soft_sort_gather, sorted_cosine (cpu, torch, triton);
- ``losses``: NT-Xent, WCH (weights, loss, bit balance), SortedNCE, CIBHash's KL terms, mutual_attention;
- ``models``: WCH, NSH, CIBHash (constructors, encode, loss), the backbones, LSH / ITQ;
- ``patchsim``: patch_similarity (maxmean, softmaxmean, masks, temperature; torch, triton), patch_similarity_reference.
"""
import pytest
from badinput import judge
from collect import all_cases

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, tmp_path):
    outcome = judge(case, tmp_path)
    assert outcome.ok, f"{outcome.kind}: {outcome.detail}"
