"""``python -m tempattn.models <name> [options]``: train one model on its real dataset.

``python -m tempattn.models validate gpcm``: measure the design's validation criteria (gpcm.validate).

``python -m tempattn.models compare FAMILY --seeds 3``: the family's model and its baselines over the same
seeds, budget and split, mean ± std per metric (common.compare)."""
import importlib
import sys

from . import family_of, model_names

# family -> module with main(argv): its design's validation criteria
VALIDATORS = {family: f"tempattn.models.{family}.validate" for family in ("gpcm", "migt_tvdt", "kolosis")}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m tempattn.models NAME [options]   (NAME: {', '.join(model_names())};"
              f" NAME --help lists its options)\n       python -m tempattn.models validate FAMILY [options]   "
              f"(FAMILY: {', '.join(VALIDATORS)})\n       python -m tempattn.models compare FAMILY --seeds 3 "
              f"[options]   (compare --help)")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "compare":
        from .common.compare import main as compare
        return int(compare(rest) or 0)
    if name == "validate":
        if not rest or rest[0] not in VALIDATORS:
            print(f"usage: python -m tempattn.models validate FAMILY [options]   (FAMILY: {', '.join(VALIDATORS)})",
                  file=sys.stderr)
            return 0 if rest and rest[0] in ("-h", "--help") else 2
        return int(importlib.import_module(VALIDATORS[rest[0]]).main(rest[1:]) or 0)
    if name not in model_names():
        print(f"usage: python -m tempattn.models NAME [options]\npython -m tempattn.models: error: unknown model "
              f"name {name!r}; choose from {', '.join(model_names())}", file=sys.stderr)
        return 2
    train = importlib.import_module(f"tempattn.models.{family_of(name)}.train")
    return int(train.main([name, *rest]) or 0)


if __name__ == "__main__":
    sys.exit(main())
