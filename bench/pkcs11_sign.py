"""Benchmark: signing with a key in a SoftHSM2 token (one worker thread) against a software key, in one run.

    python bench/pkcs11_sign.py [--n 2000] [--batch 32]

Prints signatures/s for: a software key inline; the token, one call per message; and the token with batch
signing (one token call per ``--batch`` messages, as the gateway does under load), with ratios to the software
baseline. Needs softhsm2 and python-pkcs11. Bounded by ``--n`` signatures per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core import envelope
from gateway.core.settings import Pkcs11Key
from gateway.proxy.batchsigner import BatchSigner
from gateway.trust.pkcs11_signer import Pkcs11Signer, generate_key
from gateway.trust.pki import new_key

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


async def batched(signer: BatchSigner, n: int, batch: int) -> float:
    manifests = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 600) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, batch):
        await asyncio.gather(*(signer.sign(m) for m in manifests[start:start + batch]))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="wasl-hsm-"))
    (folder / "tokens").mkdir()
    (folder / "softhsm2.conf").write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(folder / "softhsm2.conf")
    os.environ["WASL_BENCH_PIN"] = "1234"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1234", "--so-pin",
                    "5678"], check=True, capture_output=True)
    settings = Pkcs11Key(module=MODULE, token_label="bench", key_label="sign", pin_env="WASL_BENCH_PIN")
    generate_key(settings)
    token = Pkcs11Signer(settings)
    key = new_key()
    data = b"m" * 700

    started = time.perf_counter()
    for _ in range(args.n):
        envelope.sign_bytes(data, key)
    software = args.n / (time.perf_counter() - started)

    started = time.perf_counter()
    for _ in range(args.n):
        token.sign_blocking(data)
    token_each = args.n / (time.perf_counter() - started)

    signer = BatchSigner(token.sign_blocking, b"cert", sign_elsewhere=token.sign)
    token_batched = asyncio.run(batched(signer, args.n, args.batch))
    token.close()
    print(f"software key, inline          {software:9.0f} signatures/s")
    print(f"PKCS#11 token, one per message {token_each:8.0f} signatures/s  ratio {token_each / software:.2f}")
    print(f"PKCS#11 token, batches of {args.batch:<4} {token_batched:8.0f} messages/s    ratio "
          f"{token_batched / software:.2f}")
    print(f"software_sps={software:.0f} token_sps={token_each:.0f} token_batched_mps={token_batched:.0f} "
          f"ratio={token_batched / software:.2f}")


if __name__ == "__main__":
    main()
