# Ablation: the pruned digits student finetuned with DSM only (Diff-Pruning's recipe).
_base_ = ['./2ndm_digits16.py']

model = dict(losses=dict(kd=None, jacobian=None))
