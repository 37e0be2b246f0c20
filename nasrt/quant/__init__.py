"""int8 post-training quantisation (numpy; onnxruntime optional, for its calibrators):
the parameters (params), calibration on training images (calibrate), the fp32 net and
the bit-exact int8 reference the int8 kernels are tested against (reference), the int8
model file (modelfile) and the whole of `nasrt quantize` (quantize)."""
from nasrt.quant.calibrate import DEFAULT_METHOD, METHODS, calibrate, calibration_images, default_fp32
from nasrt.quant.modelfile import int8_model_bytes, read_int8_model, write_int8_model
from nasrt.quant.params import ActQ, LayerQ, QuantParams, build_params, validate
from nasrt.quant.quantize import QuantReport, quantize_model
from nasrt.quant.reference import fp32_forward, int8_reference

__all__ = ["DEFAULT_METHOD", "METHODS", "ActQ", "LayerQ", "QuantParams", "QuantReport", "build_params", "calibrate",
           "calibration_images", "default_fp32", "fp32_forward", "int8_model_bytes", "int8_reference",
           "quantize_model", "read_int8_model", "validate", "write_int8_model"]
