"""``artok push CHECKPOINT REPO_ID``: upload a tokenizer, generator or pipeline folder to the Hugging Face Hub,
with a generated model card."""
from __future__ import annotations

from artok.checkpoint import push_to_hub, read_config, resolve


def push(args) -> int:
    directory = resolve(args.checkpoint)
    kind = read_config(directory).get("model_type")
    url = push_to_hub(directory, args.repo_id, revision=args.revision, private=args.private or None,
                      commit_message=args.message)
    branch = f" (branch {args.revision})" if args.revision else ""
    revision = f", revision={args.revision!r}" if args.revision else ""
    print(f"pushed the {kind} in {directory} to {args.repo_id}{branch}: {url}")
    print(f"load it with: artok.from_pretrained({args.repo_id!r}{revision})")
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser("push", help="upload a checkpoint to the Hugging Face Hub, with a model card",
                       formatter_class=formatter_class, description=__doc__)
    p.add_argument("checkpoint", help="artok checkpoint directory (tokenizer, generator or pipeline, e.g. "
                   "runs/x/pipeline)")
    p.add_argument("repo_id", help="Hub repository, user/name (created when missing)")
    p.add_argument("--revision", help="branch to commit to (created when missing; default: the main branch)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=push)
