r"""CPU speed of hf_birnn against baselines run in the same process, as tables of ratios, a JSON file and Markdown
pages with the command, the machine and the versions that made them.

    # first the tagger that the int8 and pipeline sections read (no CRF, so that the runtimes' ratios are the
    # encoder's: a CRF's decoding runs in torch after every runtime)
    python scripts/run_ner.py --output_dir outputs/wnut17-bilstm --num_train_epochs 10 --run_demo false \
        --config_overrides hidden_size=256,cell_type=lstm,embedding_dropout=0.25,hidden_dropout=0.25,\
classifier_dropout=0.25
    python scripts/benchmarks/run.py                          # every section; rewrites docs/benchmarks/
    python scripts/benchmarks/run.py --only overhead,int8 --repeats 7
    python scripts/benchmarks/run.py --quick                  # tiny sizes, a smoke test (tests/test_benchmarks.py)

Sections: overhead (BiRNN vs raw nn.LSTM), trainer (Trainer vs a hand-written loop), int8 (`quantize_for_cpu` and
ONNX Runtime on the WNUT-17 dev set), onnx (`export_onnx` per cell type), scaling (BiLSTM vs BERT over sequence
lengths), pipeline (the pipeline's overhead), denormal (flush-to-zero on a padded training step). Within a round the
variants of a row run one after another, so that load from other processes falls on all of them; times are medians
over `--repeats` rounds of the process's CPU time (`--clock wall` for wall-clock time), and each ratio is the
median of the per-round ratios.

Each section run gets a page `<docs_dir>/<section>.md` (its tables, its plots next to it, the command, the machine,
the versions, the clock and the date) and `<docs_dir>/README.md` indexes the pages there. `--quick` writes its pages
under `--output_dir` unless `--docs_dir` is given, so that a smoke test never replaces measured pages.
"""

import os

# The environment as launched, read before any library is imported: some set variables of their own on import
# (scikit-learn sets KMP_*), which a page's command line must not show as the user's.
LAUNCH_ENVIRONMENT = dict(os.environ)
