"""Device-side Triton helpers shared by the kernel modules (`_rnn2d_triton`, `_mlstm_triton`)."""
import triton
import triton.language as tl


@triton.jit
def dot(a, b, IEEE: tl.constexpr):
    # fp32 inputs ask for IEEE precision (no TF32), so fp32 kernels match the PyTorch forms to 1e-5
    if IEEE:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out
