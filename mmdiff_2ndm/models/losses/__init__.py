from .jacobian_products import (jacobian_safe_kernels, jacobian_vector_product,
                                unit_directions, vector_jacobian_product)
from .second_order_match_loss import JacobianMatchOutput, SecondOrderMatchLoss

__all__ = [
    'SecondOrderMatchLoss', 'JacobianMatchOutput', 'jacobian_safe_kernels',
    'jacobian_vector_product', 'vector_jacobian_product', 'unit_directions'
]
