"""`lstmvision robustness`: argparse glue (the work is in `lstmvision.analysis.robustness`)."""
from lstmvision.analysis.robustness import add_arguments, run  # noqa: F401
