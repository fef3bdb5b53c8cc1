"""`lstmvision benchmark`: argparse glue (the work is in `lstmvision.benchmark`)."""
from lstmvision.benchmark import add_arguments, run  # noqa: F401
