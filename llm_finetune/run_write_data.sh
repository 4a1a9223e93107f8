#!/bin/bash
# Prepare the corpora of the LLM experiments under $REPRSIM_DATA/text/<corpus>/v2_hf_<hash>/.
#
#   bash run_write_data.sh [--model REF] [--corpora ...] [--force]
#       the study's six v2 corpora (tiny-webtext, tiny-codes, Trelis/tiny-shakespeare,
#       TinyStories, wikitext-103-raw-v1, tiny-textbooks) tokenised with REF's tokenizer
#       (default meta-llama/Llama-3.2-1B-Instruct: in the HF cache, or a folder); every
#       Llama-3.2 model with that tokenizer reuses the files. Needs the hub datasets (or
#       the datasets cache) and, for gated models, your token (`hf auth login`).
#   bash run_write_data.sh --tiny [--force]
#       offline: the six generated text domains (repr_sim/data/textgen), a BPE tokenizer
#       trained on them with the `tokenizers` package, a random 2-layer, width-32 Llama
#       saved with save_pretrained to $REPRSIM_DATA/llm/tiny_llama/ (a stand-in for a hub
#       model), and the six corpora prepared with it.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=python
[ -x "$here/../.venv/bin/python" ] && python="$here/../.venv/bin/python"
exec "$python" -m repr_sim.kinds.llm.data "$@"
