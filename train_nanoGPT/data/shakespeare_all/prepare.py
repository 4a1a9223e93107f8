"""Prepare shakespeare_all: input.txt (beside this script by default) -> train.bin / val.bin.

First 90% of the characters train, last 10% val, GPT-2 BPE, no end-of-text token
(docs/protocol.md section 2). Output: $REPRSIM_DATA/text/shakespeare_all/. The logic is
`reprsim prepare-text` (repr_sim.data.text); any of its options can be given, e.g.

    python prepare.py                          # ./input.txt, tokenizer gpt2
    python prepare.py --data-files other.txt --tokenizer bytes
"""

import sys
from pathlib import Path

from repr_sim.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    here = Path(__file__).resolve().parent / "input.txt"
    if "--data-files" not in argv and here.is_file():
        argv = [*argv, "--data-files", str(here)]
    sys.exit(main(["prepare-text", "shakespeare_all", *argv]))
