"""Values shared across layers that the command line needs without importing torch: normalisation constants
and the vocabularies of user choices. A leaf: imports nothing."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
AMP_MODES = ("none", "bf16", "fp16")
TIMM_PREFIX = "timm:"  # a model spec built by timm: `timm:NAME`
UPERNET_PREFIX = "upernet:"  # the architecture of a segmentation model saved by `lstmvision segment train`
DETECTOR_PREFIX = "detector:"  # the architecture of a detector saved by `lstmvision detect train`
DETECTORS = ("fasterrcnn", "retinanet", "fcos", "maskrcnn")  # torchvision's detectors (lstmvision.models.detection)
# the models that are not classifiers, by their pretrained_cfg['task'], as the refusals of other commands name them
TASK_MODELS = {"segment": "a segmentation model (UperNet)", "detect": "a detection model"}
# the BiLSTM2D scan (lstmvision.ops.rnn2d); flashrnn-*: the opt-in FlashRNN library (lstmvision[kernels])
RNN2D_BACKENDS = ("auto", "module", "reference", "fused", "triton",
                  "flashrnn-vanilla", "flashrnn-vanilla_fwbw", "flashrnn-triton", "flashrnn-cuda")
# the mLSTM (lstmvision.ops.mlstm); mlstm_kernels-*: the opt-in NXAI mlstm_kernels library (lstmvision[kernels])
MLSTM_BACKENDS = ("auto", "parallel", "fused", "factored", "chunkwise", "recurrent", "triton",
                  "mlstm_kernels-chunkwise-native", "mlstm_kernels-parallel-native", "mlstm_kernels-chunkwise-triton")
PRECISIONS = ("fp32", "bf16", "fp16")
EXPORT_FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
MIN_OPSET = 11  # Resize with bicubic mode (v_sequencer_s_pe's position embedding) needs opset 11
EXPORT_TOLERANCE = 1e-4
CORRUPTION_NAMES = (  # ImageNet-C, in the benchmark's order (lstmvision.commands.analysis.corruptions)
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
VTAB_LRS = (1e-3, 7.5e-4, 5e-4, 2.5e-4, 1e-4)  # the VTAB-1K protocol's learning-rate sweep
