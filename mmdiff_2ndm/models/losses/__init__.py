from .dsm_loss import DSMLoss
from .jacobian_products import (jacobian_safe_kernels, jacobian_vector_product,
                                unit_directions, vector_jacobian_product)
from .kd_loss import KDLoss
from .second_order_match_loss import JacobianMatchOutput, SecondOrderMatchLoss
from .squared_error import squared_error

__all__ = [
    'DSMLoss', 'KDLoss', 'SecondOrderMatchLoss', 'JacobianMatchOutput', 'squared_error',
    'jacobian_safe_kernels', 'jacobian_vector_product', 'vector_jacobian_product',
    'unit_directions'
]
