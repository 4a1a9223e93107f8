"""Prepare tinywebtext: nampdn-ai/tiny-webtext (field human) -> train.bin / val.bin.

The hub dataset's train split, train_test_split(test_size=0.05, seed=2357), GPT-2 BPE with
the end-of-text token after every document (docs/protocol.md section 2), tokenised in parallel.
Output: $REPRSIM_DATA/text/tinywebtext/. The logic is `reprsim prepare-text`
(repr_sim.data.text); any of its options can be given, e.g. offline from local files:

    python prepare.py                                   # from the Hugging Face hub
    python prepare.py --data-files part-0.parquet part-1.parquet
    python prepare.py --data-files docs.txt --tokenizer bytes   # one document per line
"""

import sys

from repr_sim.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare-text", "tinywebtext", *sys.argv[1:]]))
