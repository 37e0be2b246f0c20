"""int8 post-training quantisation (numpy; onnxruntime optional, for its calibrators):
the parameters (params), calibration on training images (calibrate), and the fp32 net
and the bit-exact int8 reference the int8 kernels are tested against (reference)."""
from nasrt.quant.calibrate import DEFAULT_METHOD, METHODS, calibrate, calibration_images, default_fp32
from nasrt.quant.params import ActQ, LayerQ, QuantParams, build_params, validate
from nasrt.quant.reference import fp32_forward, int8_reference

__all__ = ["DEFAULT_METHOD", "METHODS", "ActQ", "LayerQ", "QuantParams", "build_params", "calibrate",
           "calibration_images", "default_fp32", "fp32_forward", "int8_reference", "validate"]
