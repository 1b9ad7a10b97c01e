# Ablation: the paper's unscaled 2ndM term (weight 0.1, all timesteps, whole batch).
_base_ = ['./2ndm_digits16.py']

model = dict(losses=dict(jacobian=dict(loss_weight=0.1, batch_fraction=1.0, scale=None)))
