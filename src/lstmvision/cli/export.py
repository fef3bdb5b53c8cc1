"""`lstmvision export`: argparse glue (the work is in `lstmvision.export`)."""
from lstmvision.export import add_arguments, run  # noqa: F401
