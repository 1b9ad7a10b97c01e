# Ablation: DSM + output KD, no Jacobian term (published FID 5.05). Everything else as
# 2ndm_cifar10.py.
_base_ = ['./2ndm_cifar10.py']

model = dict(losses=dict(jacobian=None))
