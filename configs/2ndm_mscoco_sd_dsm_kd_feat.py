# Ablation: BK-SDM's own recipe, DSM + output KD + feature KD (1 / 1 / 1 in BK-SDM's
# element-mean terms), without the Jacobian term: the baseline the published 2ndM result
# (BK-SDM-Base 15.76 -> 13.84) improves on. Everything else as 2ndm_mscoco_sd.py.
_base_ = ['./2ndm_mscoco_sd.py']

model = dict(losses=dict(jacobian=None))
