"""Create or update a Hugging Face Space from this working tree, sending only the files the Space runs.

    python scripts/deploy_space.py OWNER/NAME --dry-run       # list the files, their sizes and the total; nothing sent
    python scripts/deploy_space.py OWNER/NAME                 # create the Space (Gradio SDK) or update it
    python scripts/deploy_space.py OWNER/NAME --folder DIR    # write the same files to DIR, for a git push instead

Why not `git push` of the repository: the Hub refuses a push whose history holds binary files not stored with LFS or
Xet, and this repository's history holds about 96 MB of them. The upload goes through `huggingface_hub` (one
`HfApi.create_commit`), which stores each binary the way the Hub wants.

Which files: by rule, never by a hand list, from the files git tracks plus the untracked ones it does not ignore
(so runs/, .venv/ and caches never go): app.py, requirements.txt, README.md, .gitattributes, every top-level Python
package (a folder with __init__.py) other than tests/, benchmarks/ and scripts/, and the data folders assets/ and
relations/; no __pycache__ or compiled files. Updating a Space deletes its files that are no longer in that set, keeps
its .gitattributes, and keeps the Space's own README metadata (title, emoji, hf_oauth, ...): only the keys the code
depends on (sdk, sdk_version, app_file) come from this tree's README. The token is the one `huggingface_hub` finds:
$HF_TOKEN, else the one saved by `hf auth login`.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reversion_core.errors import ReVersionError  # noqa: E402

TOP_FILES = ("app.py", "requirements.txt", "README.md", ".gitattributes")
DATA_DIRS = ("assets", "relations")
NOT_DEPLOYED = ("tests", "benchmarks", "scripts")  # Python packages of the repository that the Space does not run
OWN_METADATA = ("sdk", "sdk_version", "app_file")  # README front-matter keys the code depends on: always this tree's
HUB_KEPT = ".gitattributes"  # the Hub needs it; huggingface_hub never deletes it either


# ----------------------------------------------------------------------------------------------- the file set
def space_files(root: Path = REPO) -> list[str]:
    """The paths (relative, '/'-separated, sorted) of the files the Space runs, chosen by rule from ``root``."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True,
            check=True,
        ).stdout.decode("utf-8").split("\0")
    except (OSError, subprocess.CalledProcessError):
        raise ReVersionError(f"{root} is not a git checkout; run this from a clone of the repository.") from None
    keep = []
    for path in filter(None, listed):
        parts = path.split("/")
        if "__pycache__" in parts or path.endswith((".pyc", ".pyo")) or not (root / path).is_file():
            continue  # (a file deleted in the working tree is still listed by the index)
        if len(parts) == 1:
            chosen = path in TOP_FILES
        else:
            top = parts[0]
            chosen = top in DATA_DIRS or (top not in NOT_DEPLOYED and (root / top / "__init__.py").is_file())
        if chosen:
            keep.append(path)
    return sorted(set(keep))


def listing(files: list[str], root: Path = REPO) -> str:
    """One line per file (bytes, path), then the count and the total."""
    sizes = [(root / f).stat().st_size for f in files]
    lines = [f"{size:>12,d}  {path}" for size, path in zip(sizes, files)]
    total = sum(sizes)
    lines.append(f"{len(files)} files, {total / 1e6:.1f} MB ({total:,d} bytes)")
    return "\n".join(lines)


def write_folder(files: list[str], dest: Path, root: Path = REPO) -> None:
    """Copy ``files`` into the empty or new folder ``dest``: a fresh copy of the Space (built beside it, then renamed)."""
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise ReVersionError(f"{dest} is not empty; give a new or empty folder.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for f in files:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, tmp / f)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- the Space
def check_space_id(space_id: str) -> str:
    """``space_id`` if it reads OWNER/NAME the way the Hub accepts, else a one-sentence error."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(space_id)
    except HFValidationError:
        pass
    else:
        if space_id.count("/") == 1:
            return space_id
    raise ReVersionError(f"{space_id!r} is not a Space id; write it as OWNER/NAME, for example alice/reversion-studio.")


def merged_readme(ours: Path, theirs: Path | None, out: Path) -> None:
    """Write this tree's README to ``out``; where the Space has a README of its own (``theirs``), keep its front
    matter: the Space's keys win, except those the code depends on (OWN_METADATA), which are always ours."""
    if theirs is None:
        shutil.copy2(ours, out)
        return
    from huggingface_hub import CardData, RepoCard

    import yaml

    card = RepoCard.load(ours)
    try:
        existing = RepoCard.load(theirs).data.to_dict()
    except (ValueError, yaml.YAMLError):
        raise ReVersionError("The Space's README.md starts with metadata that cannot be read as YAML; fix or remove it "
                             "on the Hub, then deploy again.") from None
    own = card.data.to_dict()
    card.data = CardData(**{**own, **existing, **{k: own[k] for k in OWN_METADATA if k in own}})
    card.save(out)


def deploy(space_id: str, files: list[str], token: str, private: bool = False, message: str | None = None,
           root: Path = REPO):
    """Create the Space (Gradio SDK) if needed and commit ``files`` to it in one commit that also deletes the Space's
    files no longer in the set. Returns (commit info, deleted paths)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    existed = api.repo_exists(space_id, repo_type="space")
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    remote = set(api.list_repo_files(space_id, repo_type="space"))
    stale = sorted(remote - set(files) - {HUB_KEPT})
    with tempfile.TemporaryDirectory(prefix="space-readme-") as tmp:
        readme = Path(tmp) / "README.md"
        theirs = Path(api.hf_hub_download(space_id, "README.md", repo_type="space", local_dir=tmp + "/theirs")) \
            if existed and "README.md" in remote else None  # a new Space's README is the Hub's template
        merged_readme(root / "README.md", theirs, readme)
        operations = [
            CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(readme if f == "README.md" else root / f)) for f in files
        ] + [CommitOperationDelete(path_in_repo=p) for p in stale]
        info = api.create_commit(
            space_id, repo_type="space", operations=operations,
            commit_message=message or f"Deploy ReVersion Studio ({len(files)} files)",
        )
    return info, stale


def find_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ReVersionError("No Hugging Face token was found; set HF_TOKEN or run `hf auth login`, then run this again.")
    return token


def from_the_hub(exc: Exception) -> bool:
    """Whether ``exc`` is the Hub refusing (an HTTP error status) or not answering (the network, any HTTP client)."""
    from huggingface_hub.errors import HfHubHTTPError

    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, (HfHubHTTPError, OSError)) or module in ("httpx", "httpx2", "httpcore", "httpcore2", "requests")


def hub_error(exc: Exception, space_id: str) -> ReVersionError:
    """The one sentence for a refusal or an unreachable Hub."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        return ReVersionError(f"The Hugging Face Hub refused the deployment to {space_id}: {text}.")
    return ReVersionError(f"The Hugging Face Hub could not be reached ({text}); check the network and try again.")


# ----------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("space_id", metavar="SPACE_ID", help="OWNER/NAME of the Space, created when it does not exist")
    p.add_argument("--dry-run", action="store_true", help="list the files, their sizes and the total; send nothing")
    p.add_argument("--folder", type=Path, help="write the files to this new folder instead of uploading (for git push)")
    p.add_argument("--private", action="store_true", help="create the Space private (an existing Space keeps its visibility)")
    p.add_argument("--message", help="the commit message on the Space")
    args = p.parse_args(argv)
    try:
        space_id = check_space_id(args.space_id)
        files = space_files()
        if args.dry_run:
            print(f"The Space {space_id} would get these files (nothing is sent with --dry-run):")
            print(listing(files))
            return 0
        if args.folder is not None:
            write_folder(files, args.folder)
            print(f"Wrote {len(files)} files to {args.folder}: a fresh copy of the Space {space_id}.")
            return 0
        token = find_token()
        try:
            info, deleted = deploy(space_id, files, token, args.private, args.message)
        except Exception as exc:
            if not from_the_hub(exc):
                raise
            raise hub_error(exc, space_id) from None
    except ReVersionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Deployed {len(files)} files to https://huggingface.co/spaces/{space_id}"
          + (f", deleting {len(deleted)} it no longer needs" if deleted else "") + f" (commit {info.oid[:8]}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
