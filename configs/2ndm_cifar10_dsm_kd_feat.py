# Ablation: DSM + output KD + feature KD (BK-SDM's recipe on the pruned CIFAR-10 student),
# no Jacobian term. Everything else as 2ndm_cifar10.py.
# Feature KD: the output of every down and up block of the DDPM U-Net (8 points), the
# width-pruned student compared at the teacher channels its pruning record kept. BK-SDM
# weighs DSM / KD / feature KD 1 / 1 / 1 with every term an element mean; DSM and KD here
# are pixel-summed (3 x 32 x 32 = 3072 elements), so the element-mean feature term gets
# weight 3072 to keep BK-SDM's proportions.
_base_ = ['./2ndm_cifar10.py']

model = dict(losses=dict(
    jacobian=None,
    feat=dict(type='FeatureKDLoss', layers='bk-sdm', reduction='mean', loss_weight=3072.0)))
