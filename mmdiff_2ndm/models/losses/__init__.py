from .dsm_loss import DSMLoss
from .feature_kd_loss import FeatureKDLoss
from .feature_points import feature_points, kept_output_channels
from .jacobian_products import (jacobian_safe_kernels, jacobian_vector_product,
                                unit_directions, vector_jacobian_product)
from .kd_loss import KDLoss
from .loss_inputs import LOSS_INPUTS, loss_inputs
from .second_order_match_loss import JacobianMatchOutput, SecondOrderMatchLoss
from .squared_error import squared_error

__all__ = [
    'DSMLoss', 'KDLoss', 'FeatureKDLoss', 'SecondOrderMatchLoss', 'JacobianMatchOutput',
    'squared_error', 'jacobian_safe_kernels', 'jacobian_vector_product',
    'vector_jacobian_product', 'unit_directions', 'LOSS_INPUTS', 'loss_inputs',
    'feature_points', 'kept_output_channels'
]
