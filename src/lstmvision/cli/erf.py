"""`lstmvision erf`: argparse glue (the work is in `lstmvision.analysis.erf`)."""
from lstmvision.analysis.erf import add_arguments, run  # noqa: F401
