# Ablation: DSM + output KD, no Jacobian term.
_base_ = ['./2ndm_digits16.py']

model = dict(losses=dict(jacobian=None))
