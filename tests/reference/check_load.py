"""Check that a Hugging Face model folder (e.g. one written by lmforge) loads cleanly in transformers.

usage: check_load.py --model DIR

Loads with from_pretrained(..., output_loading_info=True) (Qwen3: our reference loader, qwen3_ref.py) and
exits 1 if missing_keys, unexpected_keys, mismatched_keys or error_msgs is non-empty, or if transformers
logs a warning about weights ("not initialized" / "not used").  Prints the parameter count (tied weights
counted once).
"""
import argparse
import logging
import sys

from ref_model import load_model


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    args = ap.parse_args()

    import transformers
    transformers.logging.set_verbosity_warning()
    capture = Capture()
    logging.getLogger("transformers").addHandler(capture)
    model, info = load_model(args.model, strict=False)
    logging.getLogger("transformers").removeHandler(capture)

    problems = [f"{k}: {v}" for k, v in info.items() if v]
    problems += [f"warning: {m.splitlines()[0]}" for m in capture.messages
                 if "not initialized" in m or "not used" in m or "newly initialized" in m]
    print(f"params: {sum(p.numel() for p in model.parameters())}")
    for p in problems:
        print("FAIL " + p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
