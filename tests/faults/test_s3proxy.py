"""The fault proxy's decisions are repeatable from its seed, whatever order threads ask."""

from __future__ import annotations

import random
import threading

from s3proxy import FaultProxy


def _requests(bucket: str, ids: int) -> list[tuple[str, str]]:
    """A backup's requests, as restic and drkit send them (object ids differ every run)."""
    names = random.Random(ids)
    packs = [names.randbytes(32).hex() for _ in range(300)]
    return (
        [("PUT", f"/{bucket}/pool/data/{pack[:2]}/{pack}") for pack in packs]
        + [("GET", f"/{bucket}?list-type=2&prefix=pool%2Flocks%2F")] * 40
        + [("PUT", f"/{bucket}/status/sftp-1.json")] * 40
    )


def _decide(seed: int, order_seed: int, bucket: str = "t-1", ids: int = 1) -> dict:
    proxy = FaultProxy("http://127.0.0.1:9", fraction=0.15, seed=seed)
    requests = _requests(bucket, ids)
    random.Random(order_seed).shuffle(requests)
    shares = [requests[index::8] for index in range(8)]

    def ask(share) -> None:
        for method, target in share:
            proxy.choose(method, target)

    workers = [threading.Thread(target=ask, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return proxy.decisions


def test_the_same_seed_gives_the_same_faults_in_any_order():
    first = _decide(seed=7, order_seed=1)
    assert first == _decide(seed=7, order_seed=2)
    # another run: another random bucket, other pack ids
    assert first == _decide(seed=7, order_seed=3, bucket="t-2", ids=2)
    faults = [fault for fault in first.values() if fault]
    assert 0.05 < len(faults) / len(first) < 0.3  # about the fraction asked for
    assert set(faults) == {"503", "drop", "lost", "slow"}


def test_another_seed_gives_other_faults():
    assert _decide(seed=7, order_seed=1) != _decide(seed=8, order_seed=1)
