"""Text messages qualified per second in batch (language, intent, entities), on this machine.

Usage: .venv/bin/python bench/classify_messages.py [--messages N] [--rounds R] [CORPUS...]

The anchor, measured in the same run, is the cost of only reading and normalising the same
texts, so the figure shows what classification itself adds. Target: >= 150 messages/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifiers.corpus import iter_text_items, read_corpus
from classifiers.qualify import Qualifier
from classifiers.textmodel import normalise

TRAINING = Path(__file__).resolve().parent.parent / "classifiers" / "training"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="*", type=Path, default=[TRAINING])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    texts = [
        text
        for corpus in args.corpora
        for item, text in iter_text_items(read_corpus(corpus))
        if item.kind == "message"
    ]
    batch = [texts[i % len(texts)] for i in range(args.messages)]
    qualifier = Qualifier()
    qualifier.messages(batch[:10])  # load the models and spaCy outside the timing
    anchor, ours = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for text in batch:
            normalise(text)
        anchor.append(time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(0, len(batch), args.batch):
            qualifier.messages(batch[i : i + args.batch])
        ours.append(time.perf_counter() - started)
    a, q = statistics.median(anchor), statistics.median(ours)
    print(f"{len(batch)} messages from {len(texts)} distinct texts, {args.rounds} rounds (medians)")
    print(f"{'normalise only (anchor)':28} {len(batch) / a:10.0f} msg/s")
    print(f"{'qualify (guichet)':28} {len(batch) / q:10.0f} msg/s  (target >= 150)")


if __name__ == "__main__":
    main()
