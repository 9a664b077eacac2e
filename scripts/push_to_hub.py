#!/usr/bin/env python
"""Publish a trained BiRNN folder (the `--output_dir` of `run_ner.py`) to the Hugging Face Hub.

Uploads the safetensors weights, config (with `auto_map`), the code files it names, tokenizer files, the model card
`README.md`, metrics (`*results.json`) and plots, as one commit; never checkpoints, optimizer states or
`training_args.bin`. The repo's earlier files of those kinds that the folder lacks (the shards of an earlier
sharded save, say) are deleted in the same commit. A folder whose weights would not load as its config describes
is refused before anything is sent, `--dry_run` included. The token comes from `HF_TOKEN` or `hf auth login`, the
Hub from `HF_ENDPOINT`.

    python scripts/push_to_hub.py outputs/wnut17-birnn my-name/wnut17-birnn --dry_run
    python scripts/push_to_hub.py outputs/wnut17-birnn my-name/wnut17-birnn --private --revision v1
"""

import argparse
import sys
from pathlib import Path

from hf_birnn.hub import files_to_upload, push_folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="The trained output folder.")
    parser.add_argument("repo_id", help="`namespace/name` on the Hub (a bare name goes to the token's user).")
    parser.add_argument("--private", action="store_true", help="Create the repo private (an existing one is kept).")
    parser.add_argument("--revision", default=None, help="Branch to commit to, created from main if missing.")
    parser.add_argument("--commit_message", default="Upload BiRNN model", help="Summary of the commit.")
    parser.add_argument("--token", default=None, help="Access token (default: HF_TOKEN or the saved login).")
    parser.add_argument(
        "--dry_run", action="store_true", help="Check that the folder loads and list the files that would go up."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        files = files_to_upload(args.folder)  # the checks that a push makes first: nothing is sent
        print(
            f"Dry run: {args.folder} loads; would upload {len(files)} files to {args.repo_id} and delete the repo's "
            "other files of these kinds"
        )
        for file in files:
            print(f"  {file.name}  ({file.size:,} bytes)")
        return 0
    commit = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
    )
    print(f"Pushed {args.folder} to {commit.repo_url.repo_id}: {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
