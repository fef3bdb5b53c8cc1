"""`lstmvision memory`: argparse glue (the work is in `lstmvision.analysis.memory`)."""
from lstmvision.analysis.memory import add_arguments, run  # noqa: F401
