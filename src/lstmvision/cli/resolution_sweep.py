"""`lstmvision resolution-sweep`: argparse glue (the work is in `lstmvision.analysis.resolution`)."""
from lstmvision.analysis.resolution import add_arguments, run  # noqa: F401
