"""Write `src/lstmvision/models/model_table.json`: parameters and GMACs of every registered model at its own input
size, which `lstmvision models` reads instead of building and measuring each model (minutes on a CPU).

Run it after registering a model or changing an architecture (tests/test_cli_timm.py fails while a registered model
has no row). With model names, only their rows are measured and the others are kept:

    python scripts/make_model_table.py                    # every registered model (a few CPU-minutes)
    python scripts/make_model_table.py vil2_tiny NEW_NAME  # update these rows only
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lstmvision.models import list_models
from lstmvision.models.flops import model_rows

TABLE = Path(__file__).resolve().parents[1] / "src" / "lstmvision" / "models" / "model_table.json"
FIELDS = ("model", "params", "gmacs", "img_size", "paper_top1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="only these registered models (default: all)")
    p.add_argument("--output", type=Path, default=TABLE, help="default: %(default)s")
    args = p.parse_args()
    known = set(list_models())
    unknown = [m for m in args.models if m not in known]
    if unknown:
        p.error(f"not registered: {', '.join(unknown)}")
    names = args.models or sorted(known)
    rows: dict[str, dict] = {}
    if args.models and args.output.is_file():
        rows = {r["model"]: r for r in json.loads(args.output.read_text())["rows"] if r["model"] in known}
    t0 = time.time()
    for row in model_rows(names, None, macs=True):
        rows[row["model"]] = {k: row[k] for k in FIELDS}
    table = dict(generated_by="scripts/make_model_table.py", note="parameters and GMACs at each model's own "
                 "input size (img_size); MACs include the recurrent layers (lstmvision.models.flops); paper_top1: the "
                 "published ImageNet-1k top-1 (null: not published)",
                 rows=[rows[m] for m in sorted(rows)])
    # one row per line: readable diffs when a model is added
    body = ",\n".join("    " + json.dumps(r) for r in table["rows"])
    head = {k: v for k, v in table.items() if k != "rows"}
    text = json.dumps(head, indent=2)[:-2] + ',\n  "rows": [\n' + body + "\n  ]\n}\n"
    json.loads(text)  # well-formed
    args.output.write_text(text)
    print(f"wrote {len(table['rows'])} rows ({len(names)} measured in {time.time() - t0:.0f}s) to {args.output}")


if __name__ == "__main__":
    main()
