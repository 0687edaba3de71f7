"""``python -m tempattn.models <name> [options]``: train one model on its real dataset."""
import importlib
import sys

from . import family_of, model_names


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m tempattn.models NAME [options]   (NAME: {', '.join(model_names())};"
              " NAME --help lists its options)")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    train = importlib.import_module(f"tempattn.models.{family_of(name)}.train")
    return int(train.main([name, *rest]) or 0)


if __name__ == "__main__":
    sys.exit(main())
