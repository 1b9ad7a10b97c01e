# Ablation: DSM + output KD + feature KD (BK-SDM's recipe), no Jacobian term.
# Feature KD compares the output of every down and up block of the U-Net (4 points); the
# width-pruned student is compared at the teacher channels its pruning record kept.
# BK-SDM weighs DSM / KD / feature KD 1 / 1 / 1 with every term an element mean; DSM and KD
# here are pixel-summed (3 x 16 x 16 = 768 elements), so the element-mean feature term
# gets weight 768 to keep BK-SDM's proportions.
_base_ = ['./2ndm_digits16.py']

model = dict(losses=dict(
    jacobian=None,
    feat=dict(type='FeatureKDLoss', layers='bk-sdm', reduction='mean', loss_weight=768.0)))
