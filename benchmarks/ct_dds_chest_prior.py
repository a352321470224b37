"""DDS on a chest CT series with a prior fine-tuned on another patient's chest, beside the brain prior.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/ct_dds_chest_prior.py --model-id ct-prior-chest-lung1

``ct_dds.py`` shows the shipped brain prior losing to tuned ADMM-TV on a chest series. This asks what the
retraining path a user has (``recon train ct-prior --data DIR --init ct-prior-brain-sim``, then ``recon zoo ship``)
buys: the prior ``--model-id``, fine-tuned on the tuning patient's series only (``lung1``; its card holds the
command), runs DDS at its defaults and from pure noise (ONNX engine; ``STARTS``) on the test patient's 61 slices
(``lung2``) at ``ct_dds.py``'s four chest cases, on the same acquisitions (``ct_dds.case_acquisitions``; they and
the DDS rows are cached under ``--scratch``). The rows of tuned FBP, ADMM-TV (default and tuned) and the brain
prior's DDS on those acquisitions are read from ``--ct-dds`` (results/ct_dds.json) and written beside the new ones,
with that file named. Results: results/ct_dds_chest_prior.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch

from benchmarks.ct_dds import SERIES, SERIES_TEST_SLICES, cached, case_acquisitions, log, scored_row, slug
from pipelines.zoo import ZOO_DIR

COMPARED = ("fbp (tuned filter)", "admm-tv (default)", "admm-tv (tuned lam)", "dds (defaults)", "dds (cold start)")
STARTS = (("defaults", {}), ("cold start", {"start": 1.0}))
"""DDS with the fine-tuned prior at its defaults (warm-started from ADMM-TV) and from pure noise, as ``ct_dds.py``
runs the brain prior."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-id", required=True, help="the fine-tuned CT prior in the zoo")
    ap.add_argument("--ct-dds", default="benchmarks/results/ct_dds.json")
    ap.add_argument("--series-data", default="data/ct-lung")
    ap.add_argument("--scratch", default="benchmarks/out/ct_dds")
    ap.add_argument("--out", default="benchmarks/results/ct_dds_chest_prior.json")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    card_path = ZOO_DIR / args.model_id / "card.json"
    if not card_path.is_file():
        ap.error(f"--model-id: no {card_path}; ship the run first (recon zoo ship RUN --id {args.model_id})")
    card = json.loads(card_path.read_text())
    earlier = json.loads(Path(args.ct_dds).read_text())
    # the acquisitions ct_dds.py scored (its defaults: I0, tuning slices)
    setting = argparse.Namespace(series_data=args.series_data, tune_slices=8, i0=earlier["data"]["i0"])
    results = []
    for stored in [c for c in earlier["cases"] if c["case"].get("series")]:
        case = stored["case"]
        _, test = case_acquisitions(case, setting, Path(args.scratch))
        assert test.reference.shape[0] == SERIES_TEST_SLICES
        rows = {}
        for name, extra in STARTS:
            params = {"engine": "onnx", "model_id": args.model_id, **extra}
            path = (Path(args.scratch) /
                    f"score-{slug(case['name'])}-{args.model_id}-{card['sha256'][:12]}-{slug(name)}.json")
            label = f"dds ({name}, {args.model_id})"
            rows[label] = cached(path, lambda test=test, p=params: scored_row(test, "dds", p))
            log(f"{case['name']} {name}: {rows[label]}")
        rows.update({f"{label}, from {args.ct_dds}": stored["rows"][label] for label in COMPARED})
        results.append({"case": case, "rows": rows})
    out = {"benchmark": "ct_dds_chest_prior",
           "command": "OMP_NUM_THREADS=2 PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv),
           "machine": f"{os.cpu_count()} cores, torch {torch.__version__}",
           "model_id": args.model_id, "sha256": card["sha256"], "training": card["training"]["command"],
           "data": f"tuning patient {SERIES['tuning']} (the prior's fine-tuning data, and the classical methods' "
                   f"tuning slices), test patient {SERIES['test']} ({SERIES_TEST_SLICES} slices), as ct_dds.py",
           "cases": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
