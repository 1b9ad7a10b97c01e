# Ablation: first-order Jacobian matching ||J_S v - J_D v||^2 (same scaling, weight and
# batch fraction as 2ndm_digits16.py).
_base_ = ['./2ndm_digits16.py']

model = dict(losses=dict(jacobian=dict(mode='first_order')))
